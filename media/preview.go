package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/html"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/outbound"
)

// Limits of a URL preview: pages and images are read up to these sizes and times.
const (
	maxPreviewPage  = 1 << 20
	maxPreviewImage = 10 << 20
	previewTimeout  = 10 * time.Second
	previewCacheTTL = time.Hour
)

// Previewer fetches pages for URL previews. A user picks the URL, so every
// connection, redirects included, dials through its guard, which refuses
// loopback, private, link-local and other special addresses after DNS (SSRF)
// unless the guard's allow-list (media.preview_allow) names them.
type Previewer struct {
	guard  *outbound.Guard
	client *http.Client

	mu    sync.Mutex
	cache map[string]cachedPreview
}

type cachedPreview struct {
	og map[string]any
	at time.Time
}

// NewPreviewer returns a previewer that connects through guard. Nil: a guard
// that admits global unicast addresses only.
func NewPreviewer(guard *outbound.Guard) *Previewer {
	if guard == nil {
		guard = outbound.New(outbound.Policy{Purpose: "url preview"})
	}
	return &Previewer{guard: guard, client: guard.Client(previewTimeout), cache: map[string]cachedPreview{}}
}

// Preview fetches rawURL and returns its Open Graph data; an og:image is fetched
// through the same guarded client and stored as media of the requester.
func (s *Service) Preview(ctx context.Context, p *Previewer, requester, rawURL string) (map[string]any, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, mxerror.New(mxerror.InvalidParam, "url must be an absolute http or https URL")
	}
	p.mu.Lock()
	c, ok := p.cache[rawURL]
	p.mu.Unlock()
	if ok && time.Since(c.at) < previewCacheTTL {
		return c.og, nil
	}
	ctx, cancel := context.WithTimeout(ctx, previewTimeout)
	defer cancel()
	resp, err := p.get(ctx, rawURL)
	if err != nil {
		if errors.Is(err, outbound.ErrRefused) {
			return nil, mxerror.New(mxerror.Forbidden, "previews of this address are not allowed")
		}
		slog.Info("url preview failed", "url", rawURL, "err", err)
		return nil, &mxerror.Error{Code: mxerror.Unknown, Message: "could not fetch the URL", Status: http.StatusBadGateway}
	}
	defer resp.Body.Close()
	og := map[string]any{}
	ct, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	switch {
	case strings.HasPrefix(ct, "image/"):
		info, err := s.Upload(ctx, requester, ct, "", io.LimitReader(resp.Body, maxPreviewImage))
		if err != nil {
			return nil, err
		}
		og["og:image"], og["og:image:type"], og["matrix:image:size"] = info.MXC(), ct, info.Size
	case ct == "text/html" || ct == "application/xhtml+xml":
		og = parseOpenGraph(io.LimitReader(resp.Body, maxPreviewPage), resp.Request.URL)
		if img, ok := og["og:image"].(string); ok {
			delete(og, "og:image")
			if info, err := s.fetchImage(ctx, p, requester, img); err == nil {
				og["og:image"], og["matrix:image:size"] = info.MXC(), info.Size
				og["og:image:type"] = info.ContentType
			}
		}
	default:
		return nil, &mxerror.Error{Code: mxerror.Unknown, Message: "cannot preview " + ct, Status: http.StatusBadGateway}
	}
	p.mu.Lock()
	if len(p.cache) > 10_000 {
		clear(p.cache)
	}
	p.cache[rawURL] = cachedPreview{og: og, at: time.Now()}
	p.mu.Unlock()
	return og, nil
}

func (p *Previewer) get(ctx context.Context, rawURL string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "Hongyan URL preview (+https://matrix.org)")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp, nil
}

func (s *Service) fetchImage(ctx context.Context, p *Previewer, requester, rawURL string) (Info, error) {
	resp, err := p.get(ctx, rawURL)
	if err != nil {
		return Info{}, err
	}
	defer resp.Body.Close()
	ct, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	if !strings.HasPrefix(ct, "image/") {
		return Info{}, fmt.Errorf("og:image is %s", ct)
	}
	return s.Upload(ctx, requester, ct, "", io.LimitReader(resp.Body, maxPreviewImage))
}

// parseOpenGraph reads og:* meta tags, falling back to <title> and the description
// meta tag. Relative og:image URLs resolve against the page's URL.
func parseOpenGraph(r io.Reader, base *url.URL) map[string]any {
	og := map[string]any{}
	z := html.NewTokenizer(r)
	var title string
	inTitle := false
	for {
		switch z.Next() {
		case html.ErrorToken:
			if _, ok := og["og:title"]; !ok && title != "" {
				og["og:title"] = strings.TrimSpace(title)
			}
			if img, ok := og["og:image"].(string); ok {
				if u, err := base.Parse(img); err == nil {
					og["og:image"] = u.String()
				}
			}
			return og
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			switch string(name) {
			case "title":
				inTitle = true
			case "meta":
				var prop, content string
				for hasAttr {
					var k, v []byte
					k, v, hasAttr = z.TagAttr()
					switch string(k) {
					case "property", "name":
						prop = string(v)
					case "content":
						content = string(v)
					}
				}
				switch {
				case strings.HasPrefix(prop, "og:"):
					if n, err := strconv.Atoi(content); err == nil && (strings.HasSuffix(prop, ":width") || strings.HasSuffix(prop, ":height")) {
						og[prop] = n
					} else {
						og[prop] = content
					}
				case prop == "description":
					if _, ok := og["og:description"]; !ok {
						og["og:description"] = content
					}
				}
			}
		case html.TextToken:
			if inTitle {
				title += string(z.Text())
			}
		case html.EndTagToken:
			if name, _ := z.TagName(); string(name) == "title" {
				inTitle = false
			}
		}
	}
}
