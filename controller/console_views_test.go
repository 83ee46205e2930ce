package controller

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"postern.dev/postern/controller/console"
)

// jsonFields is the JSON names of t's fields (embedded structs flattened;
// an outer field hides an embedded one of the same name).
func jsonFields(t reflect.Type) map[string]bool {
	out := map[string]bool{}
	var embedded []reflect.Type
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if f.Anonymous && name == "" {
			embedded = append(embedded, f.Type)
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = true
	}
	for _, e := range embedded {
		for k := range jsonFields(e) {
			out[k] = true
		}
	}
	return out
}

// TestConsoleViewsMatchAPI: the console reads the admin API's JSON into its
// own types (it imports nothing of controller). The configuration's types
// go back through the API and CheckSpec, so they must carry every field of
// the controller's (a field missing there would be dropped by every console
// edit); the views it only reads must name no field the API does not send.
func TestConsoleViewsMatchAPI(t *testing.T) {
	same := []struct{ controller, console any }{
		{Spec{}, console.Spec{}}, {NetworkSpec{}, console.NetworkSpec{}}, {GroupSpec{}, console.GroupSpec{}},
		{UserSpec{}, console.UserSpec{}}, {ResourceSpec{}, console.ResourceSpec{}},
		{ServiceAccountSpec{}, console.ServiceAccountSpec{}}, {PostureProfileSpec{}, console.PostureProfileSpec{}},
	}
	for _, p := range same {
		want, got := jsonFields(reflect.TypeOf(p.controller)), jsonFields(reflect.TypeOf(p.console))
		if !maps.Equal(want, got) {
			t.Errorf("%T has fields %v, the controller's %v", p.console, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
		}
	}
	sub := []struct{ controller, console any }{
		{ConnectorView{}, console.ConnectorView{}}, {RelayView{}, console.RelayView{}}, {UserView{}, console.UserView{}},
		{ServiceAccountView{}, console.ServiceAccountView{}}, {serviceKeyView{}, console.ServiceKeyView{}},
		{SessionView{}, console.SessionView{}}, {Device{}, console.Device{}},
	}
	for _, p := range sub {
		api := jsonFields(reflect.TypeOf(p.controller))
		for f := range jsonFields(reflect.TypeOf(p.console)) {
			if !api[f] {
				t.Errorf("%T reads %q, which the API's %T does not have", p.console, f, p.controller)
			}
		}
	}
}
