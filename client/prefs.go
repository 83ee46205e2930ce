package client

// prefsFile holds Prefs in the state directory (0600).
const prefsFile = "prefs.json"

// Prefs are user choices that survive a restart.
type Prefs struct {
	// WantUp is true after `postern up` and false after `postern down`.
	WantUp bool `json:"want_up"`
}

// prefs reads the saved Prefs (the zero value when there are none).
func (d *Daemon) prefs() Prefs {
	var p Prefs
	_, _ = d.state.ReadJSON(prefsFile, &p)
	return p
}
