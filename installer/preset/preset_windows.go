package preset

import (
	"errors"
	"fmt"

	"golang.org/x/sys/windows/registry"
)

func loadStored() (Preset, error) {
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, RegistryKey, registry.QUERY_VALUE|registry.WOW64_64KEY)
	if errors.Is(err, registry.ErrNotExist) {
		return Preset{}, nil
	}
	if err != nil {
		return Preset{}, fmt.Errorf("open HKLM\\%s: %w", RegistryKey, err)
	}
	defer k.Close()
	var p Preset
	for name, dst := range map[string]*string{RegControllerURL: &p.ControllerURL, RegServiceKeyFile: &p.ServiceKeyFile, RegRange4: &p.Range4, RegRange6: &p.Range6} {
		v, _, err := k.GetStringValue(name)
		if errors.Is(err, registry.ErrNotExist) {
			continue
		}
		if err != nil {
			return Preset{}, fmt.Errorf("read HKLM\\%s\\%s: %w", RegistryKey, name, err)
		}
		*dst = v
	}
	return p, nil
}
