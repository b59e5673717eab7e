package translate

import "testing"

func TestSocketAddress(t *testing.T) {
	tests := []struct {
		addr    string
		host    string
		port    uint32
		wantErr bool
	}{
		{addr: "127.0.0.1:10001", host: "127.0.0.1", port: 10001},
		{addr: "[::1]:443", host: "::1", port: 443},
		{addr: "127.0.0.1", wantErr: true},
		{addr: "127.0.0.1:http", wantErr: true},
		{addr: "127.0.0.1:65536", wantErr: true},
		{addr: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := socketAddress(tt.addr)
		if tt.wantErr {
			if err == nil {
				t.Errorf("socketAddress(%q) = %v, want an error", tt.addr, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("socketAddress(%q): %v", tt.addr, err)
			continue
		}
		if sa := got.GetSocketAddress(); sa.GetAddress() != tt.host || sa.GetPortValue() != tt.port {
			t.Errorf("socketAddress(%q) = %s:%d, want %s:%d", tt.addr, sa.GetAddress(), sa.GetPortValue(), tt.host, tt.port)
		}
	}
}
