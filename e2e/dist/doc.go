// Package dist holds the end-to-end test of patch distribution: in one
// boot of the packaged Debian kernel, a repository is created and served
// from the guest's loopback, patches built by livefix-build kernel are
// published, promoted and revoked, and the agent (livefix update and
// livefix daemon) follows them in the running kernel.
package dist
