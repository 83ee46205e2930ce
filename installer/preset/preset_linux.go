package preset

func loadStored() (Preset, error) { return loadDefaultsFile(DefaultsFile) }
