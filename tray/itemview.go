package tray

// menuItem is what the tray sets on one menu item (*systray.MenuItem).
type menuItem interface {
	SetTitle(string)
	SetTooltip(string)
	Show()
	Hide()
}

// itemView sets a menu item's title, tooltip and visibility, and calls the
// item only for what changed. fyne.io/systray emits a dbusmenu
// LayoutUpdated signal for every call, changed or not, and a desktop
// rebuilds an open menu on it: the highlight goes back to the top and an
// open submenu closes. The daemon sends its status on every change of its
// flows or paths and every 30 s, so applying the whole menu each time made
// the menu jump under the user's pointer.
type itemView struct {
	it                               menuItem
	title, tooltip                   string
	visible                          bool
	knownTitle, knownTip, knownShown bool // the item shows the value above
}

func (v *itemView) setTitle(s string) {
	if v.knownTitle && v.title == s {
		return
	}
	v.it.SetTitle(s)
	v.title, v.knownTitle = s, true
}

func (v *itemView) setTooltip(s string) {
	if v.knownTip && v.tooltip == s {
		return
	}
	v.it.SetTooltip(s)
	v.tooltip, v.knownTip = s, true
}

func (v *itemView) setVisible(visible bool) {
	if v.knownShown && v.visible == visible {
		return
	}
	if visible {
		v.it.Show()
	} else {
		v.it.Hide()
	}
	v.visible, v.knownShown = visible, true
}

// forget makes the next set of each property call the item again (the
// desktop may show a stale copy of it).
func (v *itemView) forget() { v.knownTitle, v.knownTip, v.knownShown = false, false, false }
