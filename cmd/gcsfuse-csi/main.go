// Command gcsfuse-csi is a CSI driver that mounts Google Cloud Storage
// buckets into pods through gcsfuse.
//
//	gcsfuse-csi node [flags]     CSI Identity + Node service (privileged)
//	gcsfuse-csi controller [flags]
//	                             CSI Identity + Controller service: creates
//	                             and deletes buckets and prefixes (no privilege)
//	gcsfuse-csi mounter [flags]  FUSE daemon host: runs gcsfuse on fds the
//	                             node hands it (no privilege needed)
//	gcsfuse-csi probe [flags]    exit 0 if the driver at --endpoint is ready
//	gcsfuse-csi version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/driver"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		klog.Flush()
		fmt.Fprintf(os.Stderr, "gcsfuse-csi: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(os.Stderr, "usage: gcsfuse-csi node|controller|mounter|probe|version [flags]   (gcsfuse-csi node --help lists the flags)")
		return fmt.Errorf("no mode given")
	}
	switch args[0] {
	case "version":
		fmt.Println(driver.Version)
		return nil
	case "probe":
		return probe(args[1:])
	case "mounter":
		return runMounter(args[1:])
	case "controller":
		return runController(args[1:])
	case "node":
	default:
		return fmt.Errorf("unknown mode %q: want node, controller, mounter, probe or version", args[0])
	}
	fs := flag.NewFlagSet("gcsfuse-csi node", flag.ContinueOnError)
	var opts driver.Options
	opts.AddFlags(fs)
	addKlogFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := opts.Validate(); err != nil {
		return err
	}
	d, err := driver.New(opts, driver.Deps{})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return d.Run(ctx)
}

// addKlogFlags adds klog's verbosity flags to fs: logs always go to stderr.
func addKlogFlags(fs *flag.FlagSet) {
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	for _, name := range []string{"v", "vmodule"} {
		fs.Var(klogFlags.Lookup(name).Value, name, klogFlags.Lookup(name).Usage)
	}
}

// probe is an exec liveness probe: exit 0 when the driver answers ready.
func probe(args []string) error {
	fs := flag.NewFlagSet("gcsfuse-csi probe", flag.ContinueOnError)
	endpoint := fs.String("endpoint", "unix:///csi/csi.sock", "CSI endpoint of the running driver")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	return driver.ProbeEndpoint(ctx, *endpoint)
}
