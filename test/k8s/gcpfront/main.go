// Command gcpfront puts test/fakegcp in front of a running fake-gcs-server
// for the Kubernetes e2e tests: a GCS endpoint that checks bearer tokens per
// bucket, and a Security Token Service that trusts the test cluster's
// service-account issuer, so that pods' real kubelet-issued tokens go
// through Workload Identity end to end.
//
// Buckets are closed until the admin API opens them: POST
// /public?bucket=B (anonymous access, as the other e2e buckets need) or
// POST /grant?bucket=B&principal=P. GET /requests lists what the front saw.
package main

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/gcsfuse-csi/gcsfuse-csi/test/fakegcp"
)

func main() {
	front := flag.String("front", "127.0.0.1:0", "GCS endpoint address (host:port)")
	authAddr := flag.String("auth", "127.0.0.1:0", "token services address (STS at /v1/token)")
	admin := flag.String("admin", "127.0.0.1:0", "admin API address")
	upstream := flag.String("upstream", "", "fake-gcs-server base URL, e.g. http://10.0.0.1:14443")
	issuer := flag.String("trust-issuer", "", "service-account token issuer (kube-apiserver --service-account-issuer)")
	keyFile := flag.String("trust-key", "", "PEM public key of that issuer (kube-apiserver --service-account-key-file)")
	audience := flag.String("audience", "", "the only token audience STS accepts (empty: any)")
	flag.Parse()
	if err := run(*front, *authAddr, *admin, *upstream, *issuer, *keyFile, *audience); err != nil {
		log.Fatal(err)
	}
}

func run(frontAddr, authAddr, adminAddr, upstream, issuer, keyFile, audience string) error {
	up, err := url.Parse(upstream)
	if err != nil || up.Host == "" {
		return fmt.Errorf("-upstream=%q: want the fake-gcs-server base URL", upstream)
	}
	gcp, err := fakegcp.StartAt(authAddr)
	if err != nil {
		return err
	}
	defer gcp.Stop()
	if issuer != "" {
		pub, err := readPublicKey(keyFile)
		if err != nil {
			return err
		}
		gcp.TrustIssuer(issuer, pub)
	}
	if audience != "" {
		gcp.SetSubjectAudiences(audience)
	}
	// fake-gcs-server routes the XML API by Host: send its own.
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(up) }}
	go serve(frontAddr, gcp.Wrap(proxy))
	mux := http.NewServeMux()
	mux.HandleFunc("POST /public", func(w http.ResponseWriter, r *http.Request) {
		gcp.Public(r.URL.Query().Get("bucket"))
	})
	mux.HandleFunc("POST /grant", func(w http.ResponseWriter, r *http.Request) {
		gcp.Grant(r.URL.Query().Get("bucket"), r.URL.Query().Get("principal"))
	})
	mux.HandleFunc("GET /requests", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(gcp.Requests())
	})
	go serve(adminAddr, mux)
	log.Printf("gcpfront: GCS front %s -> %s, STS %s, admin %s, provider %s", frontAddr, upstream, gcp.STSURL, adminAddr, gcp.Provider)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}

func serve(addr string, h http.Handler) {
	srv := &http.Server{Addr: addr, Handler: h}
	log.Fatal(srv.ListenAndServe())
}

func readPublicKey(path string) (*rsa.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-trust-key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("-trust-key=%s: no PEM block", path)
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("-trust-key=%s: %w", path, err)
	}
	pub, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("-trust-key=%s: not an RSA key", path)
	}
	return pub, nil
}
