package fleetapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Client talks to a livefix-server's host API.
type Client struct {
	// BaseURL is the server, e.g. https://patches.example.com:8470.
	BaseURL string
	// HTTP is the client to use; nil: a client with a 30 s timeout that
	// honours HTTPS_PROXY.
	HTTP *http.Client
}

// StatusError is a non-2xx answer from the server.
type StatusError struct {
	Status  int
	Message string
	// RetryAfter is set on 429 (rate limited).
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("server answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: http.ProxyFromEnvironment}}
}

func (c *Client) post(ctx context.Context, path, credential string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	url := strings.TrimRight(c.BaseURL, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if credential != "" {
		req.Header.Set("Authorization", "Bearer "+credential)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes))
	if err != nil {
		return fmt.Errorf("%s: reading answer: %w", url, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &StatusError{Status: resp.StatusCode}
		var er ErrorResponse
		if json.Unmarshal(data, &er) == nil && er.Error != "" {
			e.Message = er.Error
		} else {
			e.Message = strings.TrimSpace(string(data))
		}
		if s, err := time.ParseDuration(resp.Header.Get("Retry-After") + "s"); err == nil {
			e.RetryAfter = s
		}
		return fmt.Errorf("%s: %w", url, e)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s: malformed answer: %w", url, err)
	}
	return nil
}

// Register exchanges an organisation key for a host id and credential.
func (c *Client) Register(ctx context.Context, orgKey, hostname string) (RegisterResponse, error) {
	var out RegisterResponse
	err := c.post(ctx, RegisterPath, "", RegisterRequest{Key: orgKey, Hostname: hostname}, &out)
	if err == nil && (out.HostID == "" || out.Credential == "") {
		err = fmt.Errorf("register: server answered without a host id or credential")
	}
	return out, err
}

// CheckIn sends a check-in with the host's credential. It returns nil
// only once the server has stored it.
func (c *Client) CheckIn(ctx context.Context, credential string, ci CheckIn) (CheckInResponse, error) {
	var out CheckInResponse
	err := c.post(ctx, CheckInPath, credential, ci, &out)
	if err == nil && !out.Stored {
		err = fmt.Errorf("check-in: server did not confirm storing it")
	}
	return out, err
}
