// Package fleetapi is the host API of livefix-server: the JSON messages a
// host's agent sends (registration with an organisation key, check-ins
// with its host credential), their strict decoding and validation, and
// the small client the agent uses.
//
// Messages are limited to MaxBodyBytes, must be a single JSON object
// without unknown fields, and every name is checked against a strict
// character set before anything is stored (a build-id is hex, a kernel
// release has no '/' and no "..", so none can walk a file system path).
package fleetapi
