package agent

import (
	"fmt"
	"time"

	"github.com/livefix/livefix/patchrepo"
)

// eligible says whether this host may take level l now, and why not.
func (a *Agent) eligible(l *Level, now time.Time) (bool, string) {
	cfg := a.Config
	if l.Revoked != nil {
		return false, "revoked: " + l.Revoked.Reason
	}
	if !l.Eligible(cfg.Channel, 0, now) {
		if l.Channel != cfg.Channel {
			return false, "on the " + l.Channel + " channel only"
		}
		return false, "not yet published at this host's time"
	}
	if cfg.Channel == patchrepo.ChannelStable && cfg.Delay.Duration > 0 && now.Before(l.StableSince.Add(cfg.Delay.Duration)) {
		return false, "delayed feed: due " + l.StableSince.Add(cfg.Delay.Duration).Format(time.RFC3339)
	}
	if cfg.PinLevel > 0 && l.Level > cfg.PinLevel {
		return false, fmt.Sprintf("above the pinned level %d", cfg.PinLevel)
	}
	if cfg.PinDate != "" {
		pin, _ := parsePinDate(cfg.PinDate)
		since := l.Published
		if cfg.Channel == patchrepo.ChannelStable {
			since = *l.StableSince
		}
		if since.After(pin) {
			return false, "after the pinned date " + cfg.PinDate
		}
	}
	if !patchrepo.AgentSatisfies(a.Version, l.MinAgent) {
		return false, fmt.Sprintf("needs livefix %s or newer (this is %s)", l.MinAgent, a.Version)
	}
	return true, ""
}

// dueAt is when a level now held back by the delay becomes eligible (zero
// when it is not delayed).
func (a *Agent) dueAt(l *Level, now time.Time) time.Time {
	if a.Config.Channel != patchrepo.ChannelStable || a.Config.Delay.Duration == 0 || l.Revoked != nil || l.StableSince == nil {
		return time.Time{}
	}
	due := l.StableSince.Add(a.Config.Delay.Duration)
	if !due.After(now) {
		return time.Time{}
	}
	return due
}

// Actions a plan takes.
const (
	ActionNone      = "none"
	ActionApply     = "apply"
	ActionDowngrade = "downgrade"
	ActionUnload    = "unload"
)

// Plan is the decision for one kind and build-id.
type Plan struct {
	Action string `json:"action"`
	From   int    `json:"from"`
	To     int    `json:"to"`
	Reason string `json:"reason"`
	target *Level
}

// plan decides what to do for the running kernel, at level cur, given
// the published levels for its build-id (lowest first).
func (a *Agent) plan(levels []*Level, cur int, now time.Time) Plan {
	var best, curLevel *Level
	for _, l := range levels {
		if ok, _ := a.eligible(l, now); ok {
			best = l
		}
		if l.Level == cur {
			curLevel = l
		}
	}
	p := Plan{Action: ActionNone, From: cur, To: cur}
	switch {
	case best != nil && best.Level > cur:
		p.Action, p.To, p.target = ActionApply, best.Level, best
		p.Reason = fmt.Sprintf("level %d is the highest %s level for this kernel", best.Level, a.Config.Channel)
	case curLevel != nil && curLevel.Revoked != nil && best != nil:
		p.Action, p.To, p.target = ActionDowngrade, best.Level, best
		p.Reason = fmt.Sprintf("level %d was revoked (%s); level %d is the highest still published", cur, curLevel.Revoked.Reason, best.Level)
	case curLevel != nil && curLevel.Revoked != nil:
		p.Action, p.To = ActionUnload, 0
		p.Reason = fmt.Sprintf("level %d was revoked (%s) and no lower level is published for the %s channel", cur, curLevel.Revoked.Reason, a.Config.Channel)
	case a.Config.PinLevel > 0 && cur > a.Config.PinLevel && best != nil:
		p.Action, p.To, p.target = ActionDowngrade, best.Level, best
		p.Reason = fmt.Sprintf("level %d is above the pinned level %d", cur, a.Config.PinLevel)
	case cur > 0 && curLevel == nil:
		p.Reason = fmt.Sprintf("level %d is applied but not published in the repository; kept", cur)
	case best == nil && cur == 0:
		p.Reason = "no eligible patch for this kernel"
		for _, l := range levels {
			if _, why := a.eligible(l, now); why != "" {
				p.Reason += fmt.Sprintf("; level %d: %s", l.Level, why)
			}
		}
		if len(levels) == 0 {
			p.Reason = "no patch published for this kernel's build-id"
		}
	default:
		p.Reason = fmt.Sprintf("level %d is up to date", cur)
	}
	return p
}
