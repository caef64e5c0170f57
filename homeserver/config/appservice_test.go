package config

import (
	"reflect"
	"testing"
)

func TestAppServiceConfigFilesFromEnv(t *testing.T) {
	cfg, err := Load("", []string{"HONGYAN_APP_SERVICE_CONFIG_FILES=/etc/a.yaml, /etc/b.yaml,"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/etc/a.yaml", "/etc/b.yaml"}; !reflect.DeepEqual(cfg.AppServiceConfigFiles, want) {
		t.Errorf("app_service_config_files = %q; want %q", cfg.AppServiceConfigFiles, want)
	}
}
