// Package controller creates and deletes the GCS buckets and prefixes behind
// dynamically provisioned volumes: the work of the CSI Controller service
// (pkg/driver/controller.go), without the CSI types.
//
// Two layouts, chosen by the StorageClass:
//
//   - bucket per volume: a new bucket, named from the volume name
//     (BucketName), with uniform bucket-level access and the driver's
//     labels (record.go). Volume id "bucket".
//   - prefix per volume: a directory of an existing bucket (parameter
//     bucketName), made visible by a placeholder object "<prefix>/" whose
//     metadata holds the same record. Volume id "bucket/prefix"; the node
//     mounts it with --only-dir.
//
// What the driver records on the bucket or placeholder is how it later
// knows, from the volume id alone, that it created the volume, for which
// volume name, with which delete policy and capacity. Without that record
// nothing is ever deleted.
package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"k8s.io/klog/v2"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/gcs"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// Defaults of Config.
const (
	DefaultDeleteWorkers = 16
	DefaultPageSize      = 1000
	// DefaultAttempts bounds the GCS requests of one call: the storage
	// client's own retries are otherwise unbounded but for the context,
	// and the external-provisioner retries a failed call with backoff.
	DefaultAttempts = 5
)

// Config configures a Provisioner.
type Config struct {
	DriverName   string // recorded as LabelManagedBy
	Endpoint     string // GCS JSON API endpoint; "" is Google's
	BucketPrefix string // prepended to bucket names (BucketName)
	ProjectID    string // project of new buckets when the StorageClass names none
	// BucketLabelMarker: for GCS endpoints that do not keep bucket labels
	// (fake-gcs-server), record them also on MarkerObject (see there).
	BucketLabelMarker bool
	DeleteWorkers     int // objects deleted in parallel; 0: DefaultDeleteWorkers
	PageSize          int // objects per list page; 0: DefaultPageSize
	Attempts          int // GCS requests per call at most; 0: DefaultAttempts
}

// Provisioner creates, deletes and expands volumes on GCS. It keeps no
// state about volumes: everything is read back from GCS, so a restarted
// controller (or a new leader) continues where another left off.
type Provisioner struct {
	cfg     Config
	managed string // label value of the driver name

	mu      sync.Mutex
	clients map[auth.Mode]*storage.Client // node and anonymous clients, kept
}

// New returns a Provisioner; it does no I/O.
func New(cfg Config) *Provisioner {
	if cfg.DeleteWorkers <= 0 {
		cfg.DeleteWorkers = DefaultDeleteWorkers
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = DefaultPageSize
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = DefaultAttempts
	}
	return &Provisioner{cfg: cfg, managed: labelValue(cfg.DriverName), clients: map[auth.Mode]*storage.Client{}}
}

// Close closes the kept clients.
func (p *Provisioner) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for m, c := range p.clients {
		c.Close()
		delete(p.clients, m)
	}
}

// client returns a client for creds (nil: the node's) and a func to call
// when done with it.
func (p *Provisioner) client(ctx context.Context, creds *auth.Credentials) (*storage.Client, func(), error) {
	mode := auth.ModeNode
	if creds != nil {
		mode = creds.Mode
	}
	if mode == auth.ModeNode || mode == auth.ModeAnonymous {
		p.mu.Lock()
		defer p.mu.Unlock()
		if c := p.clients[mode]; c != nil {
			return c, func() {}, nil
		}
		c, err := gcs.NewClient(ctx, p.cfg.Endpoint, creds, p.cfg.Attempts)
		if errors.Is(err, gcs.ErrUnauthenticated) {
			return nil, nil, fmt.Errorf("%w; give the call a key (the StorageClass's csi.storage.k8s.io/provisioner-secret-name and -namespace, a Secret with key.json), or the controller Application Default Credentials", err)
		}
		if err != nil {
			return nil, nil, err
		}
		p.clients[mode] = c
		return c, func() {}, nil
	}
	c, err := gcs.NewClient(ctx, p.cfg.Endpoint, creds, p.cfg.Attempts)
	if err != nil {
		return nil, nil, err
	}
	return c, func() { c.Close() }, nil
}

// Volume is a created volume.
type Volume struct {
	ID            string            // "bucket" or "bucket/prefix"
	CapacityBytes int64             // as recorded; GCS has no quota
	Context       map[string]string // volume_context: what the node needs
}

// CreateRequest is a validated CreateVolume.
type CreateRequest struct {
	Name          string // the volume (PersistentVolume) name
	RequiredBytes int64
	LimitBytes    int64 // 0: no limit
	Params        *Params
	Credentials   *auth.Credentials // nil: the node's
}

// capacity is what a new volume records: the required bytes, or the limit
// when only a limit is given.
func (r *CreateRequest) capacity() int64 {
	if r.RequiredBytes > 0 {
		return r.RequiredBytes
	}
	return r.LimitBytes
}

// VolumeID returns the id CreateVolume gives the volume name with params,
// without any I/O: callers lock it before creating.
func (p *Provisioner) VolumeID(name string, params *Params) string {
	if params.Layout == LayoutPrefix {
		return params.Bucket + "/" + PrefixName(name)
	}
	return BucketName(p.cfg.BucketPrefix, name)
}

// Create creates the volume, or returns the one a previous call with the
// same name created (idempotent). A bucket or prefix that exists but was
// not created for this volume name, or was created with another capacity
// or delete policy, is ErrAlreadyExists.
func (p *Provisioner) Create(ctx context.Context, r CreateRequest) (*Volume, error) {
	if r.Params.Layout == LayoutBucket && r.Params.ProjectID == "" && p.cfg.ProjectID == "" {
		return nil, invalidf("parameters.%s is required for the bucket-per-volume layout (the project new buckets belong to), unless the controller has --project-id", ParamProjectID)
	}
	c, done, err := p.client(ctx, r.Credentials)
	if err != nil {
		return nil, err
	}
	defer done()
	want := record{managedBy: p.managed, volume: labelValue(r.Name), deletePolicy: r.Params.DeletePolicy, capacity: r.capacity()}
	var capacity int64
	id := p.VolumeID(r.Name, r.Params)
	if r.Params.Layout == LayoutPrefix {
		capacity, err = p.createPrefix(ctx, c, r, want)
	} else {
		capacity, err = p.createBucket(ctx, c, r, want)
	}
	if err != nil {
		return nil, err
	}
	return &Volume{ID: id, CapacityBytes: capacity, Context: maps.Clone(r.Params.Attributes)}, nil
}

func (p *Provisioner) createBucket(ctx context.Context, c *storage.Client, r CreateRequest, want record) (int64, error) {
	name := BucketName(p.cfg.BucketPrefix, r.Name)
	b := c.Bucket(name)
	attrs, err := b.Attrs(ctx)
	switch {
	case err == nil:
		return p.existingBucket(ctx, b, attrs, r, want)
	case !isNotFound(err):
		return 0, gcsError(fmt.Sprintf("get bucket %q", name), "grant roles/storage.admin on the project to the controller's identity", r.Credentials, err)
	}
	project := r.Params.ProjectID
	if project == "" {
		project = p.cfg.ProjectID
	}
	labels := want.labels()
	maps.Copy(labels, r.Params.Labels)
	err = b.Create(ctx, project, &storage.BucketAttrs{
		Location:                 r.Params.Location,
		StorageClass:             r.Params.StorageClass,
		Labels:                   labels,
		UniformBucketLevelAccess: storage.UniformBucketLevelAccess{Enabled: true},
	})
	if isCode(err, http.StatusConflict) {
		// Taken: by an earlier attempt of ours that timed out, or by
		// anyone else, anywhere (bucket names are global).
		attrs, err := b.Attrs(ctx)
		if err != nil {
			return 0, failf(ErrAlreadyExists, "bucket name %q (from volume %q and --bucket-name-prefix=%q) is taken, by a bucket these credentials cannot read (%v); bucket names are global: choose another --bucket-name-prefix", name, r.Name, p.cfg.BucketPrefix, err)
		}
		return p.existingBucket(ctx, b, attrs, r, want)
	}
	if err != nil {
		return 0, gcsError(fmt.Sprintf("create bucket %q in project %q", name, project), "grant roles/storage.admin on the project to the controller's identity", r.Credentials, err)
	}
	if err := p.checkLabelsKept(ctx, b, want); err != nil {
		if derr := b.Delete(context.WithoutCancel(ctx)); derr != nil {
			klog.ErrorS(derr, "removing the bucket just created (empty) after its labels could not be recorded", "bucket", name)
		}
		return 0, err
	}
	klog.V(2).InfoS("created bucket", "bucket", name, "volume", r.Name, "project", project, "location", r.Params.Location,
		"storageClass", r.Params.StorageClass, "deletePolicy", want.deletePolicy, "capacityBytes", want.capacity)
	return want.capacity, nil
}

// checkLabelsKept reads the new bucket's labels back. An endpoint that
// drops them (fake-gcs-server) gets the marker object with
// --bucket-label-marker; without it, the bucket could never be recognized
// as the driver's, so creating it fails.
func (p *Provisioner) checkLabelsKept(ctx context.Context, b *storage.BucketHandle, want record) error {
	attrs, err := b.Attrs(ctx)
	if err != nil {
		return gcsError(fmt.Sprintf("read back bucket %q", b.BucketName()), "", nil, err)
	}
	if _, ok := readRecord(attrs.Labels); ok {
		return nil
	}
	if !p.cfg.BucketLabelMarker {
		return failf(ErrNoLabels, "the GCS endpoint did not keep the labels of the new bucket %q, so the driver could never tell it created it (and would never delete it); the bucket was removed again. For an emulator without bucket labels (fake-gcs-server), run the controller with --bucket-label-marker", b.BucketName())
	}
	w := b.Object(MarkerObject).If(storage.Conditions{DoesNotExist: true}).NewWriter(ctx)
	w.Metadata = want.labels()
	if err := w.Close(); err != nil {
		return gcsError(fmt.Sprintf("write marker gs://%s/%s", b.BucketName(), MarkerObject), "", nil, err)
	}
	return nil
}

// existingBucket decides a CreateVolume whose bucket exists: the same
// volume, created earlier (idempotent), or AlreadyExists.
func (p *Provisioner) existingBucket(ctx context.Context, b *storage.BucketHandle, attrs *storage.BucketAttrs, r CreateRequest, want record) (int64, error) {
	got, _, ok, err := p.bucketRecord(ctx, b, attrs)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, failf(ErrAlreadyExists, "bucket %q (the name volume %q maps to) exists and was not created by this driver (no label %s); it is left alone: choose another --bucket-name-prefix, or use the bucket with a static PersistentVolume", b.BucketName(), r.Name, LabelManagedBy)
	}
	return p.sameVolume(fmt.Sprintf("bucket %q", b.BucketName()), got, r, want)
}

// sameVolume compares what an existing bucket or placeholder records with
// what this CreateVolume asks for; the capacity to report if compatible.
func (p *Provisioner) sameVolume(what string, got record, r CreateRequest, want record) (int64, error) {
	switch {
	case got.managedBy != want.managedBy:
		return 0, failf(ErrAlreadyExists, "%s exists and was created by the driver %q, not %q", what, got.managedBy, want.managedBy)
	case got.volume != want.volume:
		return 0, failf(ErrAlreadyExists, "%s exists and belongs to volume %q, not %q", what, got.volume, want.volume)
	case got.capacity < r.RequiredBytes || (r.LimitBytes > 0 && got.capacity > r.LimitBytes):
		return 0, failf(ErrAlreadyExists, "volume %q exists with a capacity of %d bytes, and this request asks for %d to %d bytes", r.Name, got.capacity, r.RequiredBytes, r.LimitBytes)
	case got.deletePolicy != want.deletePolicy:
		return 0, failf(ErrAlreadyExists, "volume %q exists with %s=%s, and this request asks for %s", r.Name, ParamDeletePolicy, got.deletePolicy, want.deletePolicy)
	}
	klog.V(2).InfoS("volume exists already; CreateVolume is idempotent", "what", what, "volume", r.Name)
	return got.capacity, nil
}

// bucketRecord reads the record of a bucket-per-volume bucket: its labels,
// or (with --bucket-label-marker, and only for a bucket without any label)
// the marker object's metadata. fromMarker says which.
func (p *Provisioner) bucketRecord(ctx context.Context, b *storage.BucketHandle, attrs *storage.BucketAttrs) (rec record, fromMarker, ok bool, err error) {
	if rec, ok := readRecord(attrs.Labels); ok {
		return rec, false, true, nil
	}
	if !p.cfg.BucketLabelMarker || len(attrs.Labels) > 0 {
		return record{}, false, false, nil
	}
	oa, err := b.Object(MarkerObject).Attrs(ctx)
	if isNotFound(err) {
		return record{}, false, false, nil
	}
	if err != nil {
		return record{}, false, false, gcsError(fmt.Sprintf("read marker gs://%s/%s", b.BucketName(), MarkerObject), "", nil, err)
	}
	rec, ok = readRecord(oa.Metadata)
	return rec, true, ok, nil
}

func (p *Provisioner) createPrefix(ctx context.Context, c *storage.Client, r CreateRequest, want record) (int64, error) {
	bucket, dir := r.Params.Bucket, PrefixName(r.Name)
	b := c.Bucket(bucket)
	if _, err := b.Attrs(ctx); err != nil {
		if isNotFound(err) {
			return 0, failf(ErrInvalid, "parameters.%s=%q: the bucket does not exist; the prefix-per-volume layout puts volumes into an existing bucket (create it, or fix the StorageClass)", ParamBucketName, bucket)
		}
		return 0, gcsError(fmt.Sprintf("get bucket %q", bucket), "grant roles/storage.objectAdmin on the bucket to the controller's identity", r.Credentials, err)
	}
	obj := b.Object(dir + "/")
	what := fmt.Sprintf("prefix gs://%s/%s/", bucket, dir)
	for attempt := 0; ; attempt++ {
		oa, err := obj.Attrs(ctx)
		switch {
		case err == nil:
			got, ok := readRecord(oa.Metadata)
			if !ok {
				return 0, failf(ErrAlreadyExists, "%s exists and was not created by this driver (its placeholder object has no %s); it is left alone", what, LabelManagedBy)
			}
			return p.sameVolume(what, got, r, want)
		case !isNotFound(err):
			return 0, gcsError("get placeholder of "+what, "grant roles/storage.objectAdmin on the bucket to the controller's identity", r.Credentials, err)
		}
		// Objects under the prefix without a placeholder are someone
		// else's data: taking the prefix over would later delete them.
		if n, err := p.countUnder(ctx, b, dir+"/", 1); err != nil {
			return 0, gcsError("list "+what, "grant roles/storage.objectAdmin on the bucket to the controller's identity", r.Credentials, err)
		} else if n > 0 {
			return 0, failf(ErrAlreadyExists, "%s already holds objects that this driver did not create (there is no placeholder object %q); it is left alone", what, dir+"/")
		}
		w := obj.If(storage.Conditions{DoesNotExist: true}).NewWriter(ctx)
		w.Metadata = want.labels()
		err = w.Close()
		if isCode(err, http.StatusPreconditionFailed) && attempt == 0 {
			continue // made meanwhile, maybe by our own retried request: read it
		}
		if err != nil {
			return 0, gcsError("create placeholder of "+what, "grant roles/storage.objectAdmin on the bucket to the controller's identity", r.Credentials, err)
		}
		klog.V(2).InfoS("created prefix", "bucket", bucket, "prefix", dir, "volume", r.Name, "deletePolicy", want.deletePolicy, "capacityBytes", want.capacity)
		return want.capacity, nil
	}
}

// countUnder counts objects under prefix, up to limit.
func (p *Provisioner) countUnder(ctx context.Context, b *storage.BucketHandle, prefix string, limit int) (int, error) {
	q := &storage.Query{Prefix: prefix}
	_ = q.SetAttrSelection([]string{"Name"})
	it := b.Objects(ctx, q)
	it.PageInfo().MaxSize = limit
	n := 0
	for n < limit {
		_, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// ParseVolumeID splits a volume id into bucket and directory ("" for a
// whole bucket). ok is false for an id that cannot name a GCS bucket or
// directory at all.
func ParseVolumeID(id string) (bucket, dir string, ok bool) {
	bucket, dir, _ = strings.Cut(id, "/")
	v, err := mounter.NewVolume(bucket, "volume_id")
	if err != nil {
		return "", "", false
	}
	if dir != "" {
		if err := v.SetOnlyDir(dir, "volume_id"); err != nil {
			return "", "", false
		}
		dir, _ = v.Flag("only-dir")
	}
	return bucket, dir, true
}

// Delete deletes the volume if its record says deletePolicy=delete: the
// bucket's objects (every generation) and then the bucket, or the objects
// under the prefix and then its placeholder; the bucket of a prefix is
// never deleted. A volume that does not exist (any more) is success. A
// bucket or prefix without the driver's record is ErrNotOurs and nothing
// is touched.
//
// Deleting is resumable: an interrupted Delete (its context ended) leaves
// the record in place, and the next one lists what is left and goes on.
func (p *Provisioner) Delete(ctx context.Context, volumeID string, creds *auth.Credentials) error {
	bucket, dir, ok := ParseVolumeID(volumeID)
	if !ok {
		klog.V(2).InfoS("DeleteVolume of an id that cannot name a bucket: nothing to delete", "volumeID", volumeID)
		return nil
	}
	c, done, err := p.client(ctx, creds)
	if err != nil {
		return err
	}
	defer done()
	if dir != "" {
		return p.deletePrefix(ctx, c.Bucket(bucket), dir, creds)
	}
	return p.deleteBucket(ctx, c.Bucket(bucket), creds)
}

func (p *Provisioner) deleteBucket(ctx context.Context, b *storage.BucketHandle, creds *auth.Credentials) error {
	name := b.BucketName()
	attrs, err := b.Attrs(ctx)
	if isNotFound(err) {
		klog.V(2).InfoS("bucket does not exist (any more): nothing to delete", "bucket", name)
		return nil
	}
	if err != nil {
		return gcsError(fmt.Sprintf("get bucket %q", name), "grant roles/storage.admin on the project to the controller's identity", creds, err)
	}
	rec, fromMarker, ok, err := p.bucketRecord(ctx, b, attrs)
	if err != nil {
		return err
	}
	switch {
	case !ok:
		return failf(ErrNotOurs, "bucket %q was not created by this driver (it has no label %s): it is never deleted; remove the PersistentVolume with reclaim policy Retain, or delete the bucket yourself", name, LabelManagedBy)
	case rec.managedBy != p.managed:
		return failf(ErrNotOurs, "bucket %q was created by the driver %q, not %q: it is never deleted here", name, rec.managedBy, p.managed)
	case rec.deletePolicy != DeletePolicyDelete:
		klog.V(2).InfoS("volume deleted; its bucket is kept (deletePolicy retain)", "bucket", name, "volume", rec.volume)
		return nil
	}
	keep := ""
	if fromMarker {
		keep = MarkerObject // the record goes last
	}
	if err := p.empty(ctx, b, "", true, keep, creds); err != nil {
		return err
	}
	if fromMarker {
		if err := b.Object(MarkerObject).Delete(ctx); err != nil && !isNotFound(err) {
			return gcsError(fmt.Sprintf("delete marker gs://%s/%s", name, MarkerObject), "", creds, err)
		}
	}
	err = b.Delete(ctx)
	switch {
	case err == nil, isNotFound(err):
	case isCode(err, http.StatusConflict), isCode(err, http.StatusPreconditionFailed):
		return fmt.Errorf("delete bucket %q: it is not empty: objects were written while it was emptied; the next DeleteVolume empties it again: %w", name, gcs.ErrUnavailable)
	default:
		return gcsError(fmt.Sprintf("delete bucket %q", name), "grant roles/storage.admin on the project to the controller's identity", creds, err)
	}
	klog.V(2).InfoS("deleted bucket (deletePolicy delete)", "bucket", name, "volume", rec.volume)
	return nil
}

func (p *Provisioner) deletePrefix(ctx context.Context, b *storage.BucketHandle, dir string, creds *auth.Credentials) error {
	what := fmt.Sprintf("prefix gs://%s/%s/", b.BucketName(), dir)
	const hint = "grant roles/storage.objectAdmin on the bucket to the controller's identity"
	placeholder := b.Object(dir + "/")
	oa, err := placeholder.Attrs(ctx)
	switch {
	case isNotFound(err):
		n, lerr := p.countUnder(ctx, b, dir+"/", 1)
		switch {
		case isNotFound(lerr):
			n, lerr = 0, nil // the bucket is gone too
		case lerr != nil:
			return gcsError("list "+what, hint, creds, lerr)
		}
		if n > 0 {
			return failf(ErrNotOurs, "%s holds objects but no placeholder object %q, so this driver did not create it (or it was removed): it is never deleted; delete the objects yourself", what, dir+"/")
		}
		klog.V(2).InfoS("prefix does not exist (any more): nothing to delete", "prefix", what)
		return nil
	case err != nil:
		return gcsError("get placeholder of "+what, hint, creds, err)
	}
	rec, ok := readRecord(oa.Metadata)
	switch {
	case !ok:
		return failf(ErrNotOurs, "%s was not created by this driver (its placeholder object has no %s): it is never deleted", what, LabelManagedBy)
	case rec.managedBy != p.managed:
		return failf(ErrNotOurs, "%s was created by the driver %q, not %q: it is never deleted here", what, rec.managedBy, p.managed)
	case rec.deletePolicy != DeletePolicyDelete:
		klog.V(2).InfoS("volume deleted; its prefix is kept (deletePolicy retain)", "prefix", what, "volume", rec.volume)
		return nil
	}
	// Only live objects: the bucket and its versioning are not ours.
	if err := p.empty(ctx, b, dir+"/", false, dir+"/", creds); err != nil {
		return err
	}
	if err := placeholder.Delete(ctx); err != nil && !isNotFound(err) {
		return gcsError("delete placeholder of "+what, hint, creds, err)
	}
	klog.V(2).InfoS("deleted prefix (deletePolicy delete)", "prefix", what, "volume", rec.volume)
	return nil
}

// empty deletes every object of b under prefix (every generation with
// versions), except the object keep, listing page by page and deleting
// DeleteWorkers objects at a time. It stops at the first error or when
// ctx ends, and says how far it got.
func (p *Provisioner) empty(ctx context.Context, b *storage.BucketHandle, prefix string, versions bool, keep string, creds *auth.Credentials) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type job struct {
		name string
		gen  int64
	}
	jobs := make(chan job)
	var (
		wg      sync.WaitGroup
		deleted atomic.Int64
	)
	for range p.cfg.DeleteWorkers {
		wg.Go(func() {
			for j := range jobs {
				h := b.Object(j.name)
				if versions && j.gen != 0 {
					h = h.Generation(j.gen)
				}
				switch err := h.Delete(ctx); {
				case err == nil:
					deleted.Add(1)
				case isNotFound(err):
				default:
					cancel(gcsError(fmt.Sprintf("delete gs://%s/%s", b.BucketName(), j.name), "grant roles/storage.objectAdmin to the controller's identity", creds, err))
				}
			}
		})
	}
	q := &storage.Query{Prefix: prefix, Versions: versions}
	_ = q.SetAttrSelection([]string{"Name", "Generation"})
	it := b.Objects(ctx, q)
	it.PageInfo().MaxSize = p.cfg.PageSize
	var listErr error
list:
	for {
		oa, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			listErr = gcsError(fmt.Sprintf("list gs://%s/%s", b.BucketName(), prefix), "grant roles/storage.objectAdmin to the controller's identity", creds, err)
			break
		}
		if oa.Name == keep {
			continue
		}
		select {
		case jobs <- job{oa.Name, oa.Generation}:
		case <-ctx.Done():
			break list
		}
	}
	close(jobs)
	wg.Wait()
	err := context.Cause(ctx)
	if err == nil || (listErr != nil && errors.Is(err, context.Canceled)) {
		err = listErr
	}
	if err != nil {
		klog.InfoS("emptying interrupted; the next DeleteVolume continues with what is left", "bucket", b.BucketName(), "prefix", prefix, "deleted", deleted.Load(), "err", err)
		return fmt.Errorf("empty gs://%s/%s: deleted %d object(s), then stopped (the next DeleteVolume continues): %w", b.BucketName(), prefix, deleted.Load(), err)
	}
	klog.V(2).InfoS("emptied", "bucket", b.BucketName(), "prefix", prefix, "deleted", deleted.Load())
	return nil
}

// Expand records a new capacity. GCS has no quota, so nothing else
// changes; the capacity is what CreateVolume reports on a retry, and what
// Kubernetes shows. A smaller request keeps the recorded capacity (volumes
// never shrink). A bucket or prefix that is not the driver's gets no record
// (it is never written to) and keeps its size, whatever was asked.
func (p *Provisioner) Expand(ctx context.Context, volumeID string, required, limit int64, creds *auth.Credentials) (int64, error) {
	bucket, dir, ok := ParseVolumeID(volumeID)
	if !ok {
		return 0, failf(ErrVolumeNotFound, "volume %q: not a bucket or bucket/dir", volumeID)
	}
	c, done, err := p.client(ctx, creds)
	if err != nil {
		return 0, err
	}
	defer done()
	b := c.Bucket(bucket)
	var (
		rec    record
		found  bool
		update func(record) error
	)
	if dir == "" {
		attrs, err := b.Attrs(ctx)
		if isNotFound(err) {
			return 0, failf(ErrVolumeNotFound, "volume %q: bucket %q does not exist", volumeID, bucket)
		}
		if err != nil {
			return 0, gcsError(fmt.Sprintf("get bucket %q", bucket), "grant roles/storage.admin on the project to the controller's identity", creds, err)
		}
		var fromMarker bool
		if rec, fromMarker, found, err = p.bucketRecord(ctx, b, attrs); err != nil {
			return 0, err
		}
		update = func(r record) error {
			if fromMarker {
				_, err := b.Object(MarkerObject).Update(ctx, storage.ObjectAttrsToUpdate{Metadata: r.labels()})
				return err
			}
			var u storage.BucketAttrsToUpdate
			u.SetLabel(LabelCapacity, r.labels()[LabelCapacity])
			_, err := b.Update(ctx, u)
			return err
		}
	} else {
		obj := b.Object(dir + "/")
		oa, err := obj.Attrs(ctx)
		switch {
		case isNotFound(err):
			if n, lerr := p.countUnder(ctx, b, dir+"/", 1); lerr != nil || n == 0 {
				return 0, failf(ErrVolumeNotFound, "volume %q: nothing under gs://%s/%s/", volumeID, bucket, dir)
			}
		case err != nil:
			return 0, gcsError(fmt.Sprintf("get placeholder gs://%s/%s/", bucket, dir), "grant roles/storage.objectAdmin on the bucket to the controller's identity", creds, err)
		default:
			rec, found = readRecord(oa.Metadata)
		}
		update = func(r record) error {
			_, err := obj.Update(ctx, storage.ObjectAttrsToUpdate{Metadata: r.labels()})
			return err
		}
	}
	if !found || rec.managedBy != p.managed {
		klog.InfoS("ControllerExpandVolume of a volume this driver did not create: nothing recorded (GCS has no quota)", "volumeID", volumeID, "requiredBytes", required)
		return required, nil
	}
	if limit > 0 && rec.capacity > limit {
		return 0, failf(ErrOutOfRange, "volume %q has a capacity of %d bytes, more than limit_bytes %d: volumes do not shrink", volumeID, rec.capacity, limit)
	}
	if required <= rec.capacity {
		return rec.capacity, nil
	}
	old := rec.capacity
	rec.capacity = required
	if err := update(rec); err != nil {
		return 0, gcsError(fmt.Sprintf("record capacity of volume %q", volumeID), "grant the controller's identity roles/storage.admin (bucket layout) or roles/storage.objectAdmin (prefix layout)", creds, err)
	}
	klog.V(2).InfoS("recorded new capacity (GCS has no quota: nothing else changes)", "volumeID", volumeID, "fromBytes", old, "toBytes", required)
	return required, nil
}

// Exists returns nil if the volume exists: its bucket, or for bucket/dir
// the placeholder or any object under dir/. Otherwise ErrVolumeNotFound,
// or the GCS error that kept it from finding out.
func (p *Provisioner) Exists(ctx context.Context, volumeID string, creds *auth.Credentials) error {
	bucket, dir, ok := ParseVolumeID(volumeID)
	if !ok {
		return failf(ErrVolumeNotFound, "volume %q: not a bucket or bucket/dir", volumeID)
	}
	c, done, err := p.client(ctx, creds)
	if err != nil {
		return err
	}
	defer done()
	b := c.Bucket(bucket)
	if _, err := b.Attrs(ctx); err != nil {
		if isNotFound(err) {
			return failf(ErrVolumeNotFound, "volume %q: bucket %q does not exist", volumeID, bucket)
		}
		return gcsError(fmt.Sprintf("get bucket %q", bucket), "", creds, err)
	}
	if dir == "" {
		return nil
	}
	n, err := p.countUnder(ctx, b, dir+"/", 1)
	if err != nil {
		return gcsError(fmt.Sprintf("list gs://%s/%s/", bucket, dir), "", creds, err)
	}
	if n == 0 {
		return failf(ErrVolumeNotFound, "volume %q: nothing under gs://%s/%s/", volumeID, bucket, dir)
	}
	return nil
}

func isNotFound(err error) bool {
	return errors.Is(err, storage.ErrBucketNotExist) || errors.Is(err, storage.ErrObjectNotExist) || isCode(err, http.StatusNotFound)
}

func isCode(err error, code int) bool {
	var gerr *googleapi.Error
	return errors.As(err, &gerr) && gerr.Code == code
}

// gcsError describes a failed GCS call as done with creds: a 403 says what
// to grant (hint), everything else is gcs.Classify's.
func gcsError(what, hint string, creds *auth.Credentials, err error) error {
	what += " as " + creds.String()
	if isCode(err, http.StatusForbidden) {
		var gerr *googleapi.Error
		errors.As(err, &gerr)
		msg := fmt.Sprintf("%s: forbidden (%s)", what, gerr.Message)
		if hint != "" {
			msg += "; " + hint
		}
		return fmt.Errorf("%s: %w", msg, gcs.ErrPermissionDenied)
	}
	return gcs.Classify(what, err)
}
