// Package patchrepo is livefix's signed static patch repository: a tree of
// files any web server can serve, whose metadata follows The Update
// Framework (go-tuf/v2: root, targets, snapshot and timestamp roles,
// consistent snapshots), so that a host is protected against tampered
// files, rollback to older metadata, freeze attacks and endless data.
//
// A data directory DIR holds
//
//	DIR/keys/ROLE/KEYID.pem       ed25519 signing keys (PKCS#8, mode 0600)
//	DIR/keys/retired/             keys replaced by Rotate
//	DIR/settings.json             metadata lifetimes
//	DIR/repo.lock                 serialises every change (flock)
//	DIR/repository/metadata/      N.root.json, root.json, N.targets.json,
//	                              N.snapshot.json, timestamp.json
//	DIR/repository/targets/       kernel/BUILD-ID/LEVEL/HASH.NAME.{ko,json}
//	                              user/BUILD-ID/LEVEL/HASH.NAME.lfp
//
// DIR/repository is what a web server serves. The root keys may live
// elsewhere (offline): Init writes them to InitOptions.RootKeysDir and
// only Rotate needs them.
//
// Each target carries custom metadata (Custom): the channel (test or
// stable), publish and promotion times, CVE ids, a summary, the minimum
// agent version and, once revoked, the revocation. Publish refuses a level
// that is not higher than every published level of the same build-id, a
// malformed file, and a NAME.json whose build-id disagrees with the module.
//
// Every change is one transaction under the lock: new target files, then
// new targets, snapshot and finally timestamp metadata, each written
// atomically; the timestamp's rename is the commit point, so a crash
// leaves the previous consistent repository in force.
package patchrepo
