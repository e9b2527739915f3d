// Package buildid reads GNU build-ids, the identity livefix keys every
// live patch by: of a running kernel (/sys/kernel/notes), of a kernel
// image, and of the executables and libraries that processes map.
package buildid
