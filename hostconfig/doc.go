// Package hostconfig reads livefix's host configuration file,
// /etc/livefix/livefix.conf (flag --config, environment LIVEFIX_CONFIG),
// a TOML file:
//
//	# livefix host configuration
//	enabled = true   # false: livefix boot applies nothing (status exits 6)
//
// A missing file means the defaults. A key this livefix does not know is
// an error that names the key and its line, so that a typo never turns a
// setting silently off.
package hostconfig
