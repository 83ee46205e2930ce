package console

import (
	"fmt"
	"strconv"
	"time"
)

// The overview's flows-per-minute chart, drawn on the server as SVG (no
// JavaScript, no style attributes: colours come from console.css classes,
// so the strict CSP holds). One stacked bar per minute: allowed flows and,
// on top, refused ones.

// chartBar is one rectangle of the chart.
type chartBar struct {
	X, Y, W, H float64
	Class      string // bar-ok or bar-refused
	Title      string // what a screen reader and a tooltip say
}

// chartTick is a label on an axis.
type chartTick struct {
	X, Y float64
	Text string
}

// flowChart is the SVG's geometry.
type flowChart struct {
	Width, Height float64
	Bars          []chartBar
	Ticks         []chartTick
	Max           int
	Summary       string // the chart as one sentence (its <desc>)
	BaseY, PlotX  float64
}

const (
	chartW, chartH       = 640.0, 200.0
	chartLeft, chartBase = 40.0, 170.0 // plot area: x from chartLeft, bars grow up from chartBase
	chartTop             = 10.0
)

// buildFlowChart lays out s as bars; a minute without flows has no bar.
func buildFlowChart(s *flowStats) flowChart {
	n := len(s.Allowed)
	ch := flowChart{Width: chartW, Height: chartH, BaseY: chartBase, PlotX: chartLeft}
	for i := range n {
		if t := s.Allowed[i] + s.Refused[i]; t > ch.Max {
			ch.Max = t
		}
	}
	scaleMax := ch.Max
	if scaleMax == 0 {
		scaleMax = 1
	}
	slot := (chartW - chartLeft - 10) / float64(max(n, 1))
	unit := (chartBase - chartTop) / float64(scaleMax)
	peak := 0
	for i := range n {
		a, r := s.Allowed[i], s.Refused[i]
		if a+r == 0 {
			continue
		}
		minute := s.End.Add(-time.Duration(n-1-i) * time.Minute).UTC().Format("15:04")
		x := chartLeft + float64(i)*slot + 1
		title := fmt.Sprintf("%s: %d flows, %d refused", minute, a+r, r)
		if a > 0 {
			ch.Bars = append(ch.Bars, chartBar{X: x, Y: chartBase - float64(a)*unit, W: slot - 2, H: float64(a) * unit, Class: "bar-ok", Title: title})
		}
		if r > 0 {
			ch.Bars = append(ch.Bars, chartBar{X: x, Y: chartBase - float64(a+r)*unit, W: slot - 2, H: float64(r) * unit, Class: "bar-refused", Title: title})
		}
		if a+r > peak {
			peak = a + r
		}
	}
	ch.Ticks = []chartTick{
		{X: chartLeft - 4, Y: chartTop + 4, Text: strconv.Itoa(ch.Max)},
		{X: chartLeft - 4, Y: chartBase, Text: "0"},
		{X: chartLeft, Y: chartBase + 20, Text: "-" + strconv.Itoa(n) + " min"},
		{X: chartLeft + (chartW-chartLeft-10)/2, Y: chartBase + 20, Text: "-" + strconv.Itoa(n/2) + " min"},
		{X: chartW - 10, Y: chartBase + 20, Text: "now"},
	}
	ch.Summary = fmt.Sprintf("%d flows in the last %d minutes, at most %d in one minute", s.Flows, n, peak)
	return ch
}
