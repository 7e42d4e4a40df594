package driver

import (
	"context"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// ProbeEndpoint calls Probe on the driver serving endpoint (unix://...) and
// returns nil only if it answers ready. `gcsfuse-csi probe` uses it as an
// exec liveness probe, so the node pod opens no network port for health.
func ProbeEndpoint(ctx context.Context, endpoint string) error {
	if _, err := (&Options{Endpoint: endpoint}).socketPath(); err != nil {
		return err
	}
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := csi.NewIdentityClient(conn).Probe(ctx, &csi.ProbeRequest{})
	if err != nil {
		return fmt.Errorf("probe %s: %w", endpoint, err)
	}
	if !resp.GetReady().GetValue() {
		return fmt.Errorf("probe %s: not ready", endpoint)
	}
	return nil
}
