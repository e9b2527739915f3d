// Package fleetagent is the host side of the fleet server: it enrolls a
// host with an organisation key (livefix register --key) and sends
// check-ins after every update attempt and at least every
// checkin_interval (with jitter), built from the agent's report and
// status. It talks to the server through fleetapi.Client.
package fleetagent
