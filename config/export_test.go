package config

// SettingForTest names one setting in its three spellings.
type SettingForTest struct{ Flag, Key, Env string }

// SettingsForTest lists every setting of the table.
func SettingsForTest() []SettingForTest {
	out := make([]SettingForTest, len(settings))
	for i, s := range settings {
		out[i] = SettingForTest{s.flag, s.key, EnvName(s.flag)}
	}
	return out
}

// ValueForTest returns the value of the setting with the given YAML key as
// --help would print it, or "?" if there is no such setting.
func ValueForTest(c *Config, key string) string {
	for _, s := range settings {
		if s.key == key {
			if b, ok := s.field(c).(*bool); ok {
				if *b {
					return "true"
				}
				return "false"
			}
			return fieldValue{s.field(c)}.String()
		}
	}
	return "?"
}
