package harness

import (
	"context"
	"net"
	"net/http"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/option"
)

// StartFakeGCSWrapped is StartFakeGCS with wrap(handler) in front of
// fake-gcs-server: every request to Endpoint (what gcsfuse, the driver and
// the tests' own clients dial) goes through wrap, typically the auth front
// of test/fakegcp (fakegcp.Server.Wrap).
//
// The returned FakeGCS.Client bypasses wrap, so that test setup and checks
// need no credentials and do not show up in the front's records: it uses
// Endpoint's URLs unchanged (the Host fake-gcs-server sees, and any URL it
// hands back such as a resumable upload's Location, stay the same), but its
// transport dials a second loopback listener whatever the URL says, and
// requests arriving on that listener go to the unwrapped handler. Only
// Client knows that listener's address. Stop closes both listeners.
//
// A nil wrap serves fake-gcs-server as it is, and Client talks to Endpoint
// like everyone else.
func StartFakeGCSWrapped(objects []fakestorage.Object, wrap func(http.Handler) http.Handler) (*FakeGCS, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	var admin net.Listener
	if wrap != nil {
		if admin, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			lis.Close()
			return nil, err
		}
	}
	hostPort := lis.Addr().String()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		InitialObjects: objects,
		Scheme:         "http",
		NoListener:     true,
		PublicHost:     hostPort, // must equal what gcsfuse dials
		ExternalURL:    "http://" + hostPort,
	})
	if err != nil {
		lis.Close()
		if admin != nil {
			admin.Close()
		}
		return nil, err
	}
	f := &FakeGCS{Server: srv, Endpoint: "http://" + hostPort + "/storage/v1/"}
	client := option.WithoutAuthentication()
	if wrap == nil {
		f.http = &http.Server{Handler: srv.HTTPHandler()}
	} else {
		adminAddr := admin.Addr().String()
		raw := srv.HTTPHandler()
		f.http = &http.Server{Handler: byListener(adminAddr, raw, wrap(raw))}
		client = option.WithHTTPClient(dialOnly(adminAddr))
		go f.http.Serve(admin)
	}
	go f.http.Serve(lis)
	f.Client, err = storage.NewClient(context.Background(), option.WithEndpoint(f.Endpoint), client)
	if err != nil {
		f.Stop()
		return nil, err
	}
	return f, nil
}

// byListener sends requests that arrived on the listener at adminAddr to
// admin, and all others to front.
func byListener(adminAddr string, admin, front http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && a.String() == adminAddr {
			admin.ServeHTTP(w, r)
			return
		}
		front.ServeHTTP(w, r)
	})
}

// dialOnly is an HTTP client (without credentials) whose every connection
// goes to addr, whatever host the request URL names.
func dialOnly(addr string) *http.Client {
	var d net.Dialer
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 16,
	}}
}
