package tray

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
	"image/png"
	"math"
)

// iconSize is the edge of the drawn icons; desktops scale them.
const iconSize = 32

// state colours and marks, distinct also for colour-blind users through the
// mark inside the ring.
var iconStyles = map[string]struct {
	ring color.NRGBA
	mark string // "dot", "half", "check", "bang", "cross"
}{
	IconSignedOut:  {color.NRGBA{0x80, 0x80, 0x80, 0xff}, "dot"},
	IconConnecting: {color.NRGBA{0xe0, 0xa0, 0x00, 0xff}, "half"},
	IconConnected:  {color.NRGBA{0x20, 0xa0, 0x40, 0xff}, "check"},
	IconDegraded:   {color.NRGBA{0xf0, 0x70, 0x00, 0xff}, "bang"},
	IconError:      {color.NRGBA{0xd0, 0x20, 0x20, 0xff}, "cross"},
}

// DrawIcon renders the icon of a state.
func DrawIcon(state string) *image.NRGBA {
	st, ok := iconStyles[state]
	if !ok {
		st = iconStyles[IconError]
	}
	img := image.NewNRGBA(image.Rect(0, 0, iconSize, iconSize))
	c := float64(iconSize-1) / 2
	white := color.NRGBA{0xff, 0xff, 0xff, 0xff}
	for y := 0; y < iconSize; y++ {
		for x := 0; x < iconSize; x++ {
			dx, dy := float64(x)-c, float64(y)-c
			d := math.Hypot(dx, dy)
			if d > c {
				continue
			}
			px := st.ring
			// The door of the postern: a white arch in the middle.
			fx, fy := dx/c, dy/c
			inMark := false
			switch st.mark {
			case "dot":
				inMark = d < c*0.35
			case "half":
				inMark = d < c*0.55 && fx < 0
			case "check":
				inMark = (math.Abs(fy-(fx+0.45)*0.9-0.05) < 0.13 && fx < -0.05 && fx > -0.5) ||
					(math.Abs(fy+(fx-0.0)*1.1-0.35) < 0.13 && fx >= -0.1 && fx < 0.55)
			case "bang":
				inMark = (math.Abs(fx) < 0.12 && fy > -0.6 && fy < 0.2) || math.Hypot(fx, fy-0.45) < 0.13
			case "cross":
				inMark = (math.Abs(fx-fy) < 0.18 || math.Abs(fx+fy) < 0.18) && math.Abs(fx) < 0.5 && math.Abs(fy) < 0.5
			}
			if inMark {
				px = white
			}
			img.SetNRGBA(x, y, px)
		}
	}
	return img
}

// IconPNG returns the PNG bytes of a state's icon.
func IconPNG(state string) []byte {
	var b bytes.Buffer
	_ = png.Encode(&b, DrawIcon(state)) // encoding an in-memory image cannot fail
	return b.Bytes()
}

// IconICO wraps a state's PNG in an ICO container (Windows Vista and later
// read PNG-compressed ICO entries), which systray needs on Windows.
func IconICO(state string) []byte {
	p := IconPNG(state)
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, [3]uint16{0, 1, 1}) // reserved, type icon, 1 image
	_ = binary.Write(&b, binary.LittleEndian, struct {
		W, H, Colors, Reserved uint8
		Planes, BPP            uint16
		Size, Offset           uint32
	}{iconSize, iconSize, 0, 0, 1, 32, uint32(len(p)), 6 + 16})
	b.Write(p)
	return b.Bytes()
}
