package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
)

// Limits of GCS bucket names without dots (the only kind this driver
// makes): 3 to 63 lower-case letters, digits and dashes, starting and ending
// with a letter or digit.
const (
	maxBucketName = 63
	// MaxBucketPrefix bounds --bucket-name-prefix: with the longest prefix,
	// a name that has to be shortened keeps 11 characters of its own plus a
	// 10-character hash.
	MaxBucketPrefix = 40
	hashLen         = 10
	// maxPrefixName bounds the object prefix of a prefix-layout volume.
	maxPrefixName = 200
)

var (
	bucketPrefixRE = regexp.MustCompile(`^([a-z0-9][a-z0-9-]*)?$`)
	plainBucketRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	notBucketChars = regexp.MustCompile(`[^a-z0-9]+`)
	plainPrefixRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	notPrefixChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)
)

// ValidateBucketPrefix checks --bucket-name-prefix: lower-case letters,
// digits and dashes, starting with a letter or digit, at most
// MaxBucketPrefix characters, and nothing GCS forbids in bucket names
// ("goog" at the start, "google" or "g00gle" anywhere).
func ValidateBucketPrefix(p string) error {
	switch {
	case len(p) > MaxBucketPrefix:
		return fmt.Errorf("at most %d characters, so that bucket names (at most 63) keep room for the volume name", MaxBucketPrefix)
	case !bucketPrefixRE.MatchString(p):
		return fmt.Errorf("want lower-case letters, digits and '-', starting with a letter or digit")
	case strings.HasPrefix(p, "goog"), strings.Contains(p, "google"), strings.Contains(p, "g00gle"):
		return fmt.Errorf(`GCS refuses bucket names that start with "goog" or contain "google" or "g00gle"`)
	}
	return nil
}

// BucketName is the bucket of the bucket-per-volume layout for the volume
// name (the PersistentVolume's name, e.g. pvc-<uuid>, which the
// external-provisioner passes as CreateVolumeRequest.name). It is
// deterministic, so a retried CreateVolume finds the bucket the first one
// made.
//
// The prefix is used as it is (give it its own trailing '-'). A name that
// is already a valid bucket name after prefix (lower-case letters, digits
// and '-', at most 63 characters in all) is used as it is too:
// prefix + "pvc-<uuid>". Any other name (upper case, other characters, too
// long) is lower-cased, its other characters become '-', it is cut to fit,
// and a hash of the original name is appended, so two names never share a
// bucket because they look alike once cleaned.
func BucketName(prefix, name string) string {
	if b := prefix + name; plainBucketRE.MatchString(b) && len(b) <= maxBucketName && bucketAllowed(b) {
		return b
	}
	stem := notBucketChars.ReplaceAllString(strings.ToLower(name), "-")
	stem = strings.ReplaceAll(stem, "goog", "gxog")
	stem = strings.ReplaceAll(stem, "g00gle", "gx0gle")
	if room := maxBucketName - len(prefix) - 1 - hashLen; len(stem) > room {
		stem = stem[:room]
	}
	stem = strings.Trim(stem, "-")
	if stem != "" {
		if b := prefix + stem + "-" + hashOf(name); bucketAllowed(b) {
			return b
		}
	}
	// Nothing of the name survives, or prefix and name together spell what
	// GCS forbids (e.g. prefix "go", name "og..."): the hash alone.
	return prefix + hashOf(name)
}

// bucketAllowed applies GCS's rules beyond the character set.
func bucketAllowed(b string) bool {
	return len(b) >= 3 && !strings.HasPrefix(b, "goog") && !strings.Contains(b, "google") && !strings.Contains(b, "g00gle")
}

// PrefixName is the directory (object prefix) of a prefix-per-volume
// volume inside its bucket: the volume name itself when it is a plain name
// (letters, digits, '.', '_', '-', at most 200 characters, not starting
// with '.'), otherwise a cleaned, shortened name plus a hash of the
// original.
func PrefixName(name string) string {
	if plainPrefixRE.MatchString(name) && len(name) <= maxPrefixName {
		return name
	}
	stem := notPrefixChars.ReplaceAllString(name, "-")
	if room := maxPrefixName - 1 - hashLen; len(stem) > room {
		stem = stem[:room]
	}
	stem = strings.Trim(stem, "-.")
	if stem == "" {
		return "vol-" + hashOf(name)
	}
	return stem + "-" + hashOf(name)
}

func hashOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:hashLen]
}

var notLabelChars = regexp.MustCompile(`[^a-z0-9_-]+`)

// labelValue turns s into a GCS label value: lower-case letters, digits,
// '_' and '-', at most 63 characters. Other characters become '_' (the
// driver name gcsfuse-csi.github.io is gcsfuse-csi_github_io); a longer
// value keeps its first 52 characters and a hash of the whole.
func labelValue(s string) string {
	v := notLabelChars.ReplaceAllString(strings.ToLower(s), "_")
	if len(v) > 63 {
		v = v[:63-1-hashLen] + "-" + hashOf(s)
	}
	return v
}
