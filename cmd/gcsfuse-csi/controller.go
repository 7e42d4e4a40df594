package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/signal"
	"syscall"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/driver"
)

// runController serves the CSI Identity and Controller services behind the
// external-provisioner sidecar: it creates and deletes buckets and prefixes
// for dynamically provisioned volumes. It needs no privilege.
func runController(args []string) error {
	fs := flag.NewFlagSet("gcsfuse-csi controller", flag.ContinueOnError)
	var opts driver.ControllerOptions
	opts.AddFlags(fs)
	addKlogFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := opts.Validate(); err != nil {
		return err
	}
	c, err := driver.NewController(opts)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return c.Run(ctx)
}
