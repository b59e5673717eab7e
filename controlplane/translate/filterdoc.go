package translate

import (
	"encoding/json"
	"fmt"

	"github.com/directpipe/directpipe/filter/auth"
)

// filterDoc encodes a filter configuration and reads it back with the
// filter's own parser: a configuration the filter would refuse (a key it
// cannot use, a duplicate kid, a header it will not write) fails the
// translation, so the apply is refused with the filter's reason instead
// of Envoy NACKing the config, or, for a tcp route, every caller being
// refused by a filter that never configured.
func filterDoc(cfg any) ([]byte, error) {
	// encoding/json sorts map keys, so the document is deterministic.
	doc, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := auth.ParseConfig(doc); err != nil {
		return nil, fmt.Errorf("the filter refuses it: %w", err)
	}
	return doc, nil
}
