// Package thumbnail scales and crops images for media thumbnails. It refuses images
// whose declared size exceeds a pixel bound before decoding them, so a small file
// that claims 50 000 × 50 000 pixels (a decompression bomb) costs nothing.
package thumbnail

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"

	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // registers WebP decoding
)

// ErrTooLarge is returned for an image with more pixels than allowed.
var ErrTooLarge = errors.New("image has too many pixels to thumbnail")

// ErrNotImage is returned for input that is not a supported image.
var ErrNotImage = errors.New("not a supported image")

// Size is one thumbnail size a server generates.
type Size struct {
	Width, Height int
	Method        string // "crop" or "scale"
}

// Sizes are the spec's recommended thumbnail sizes; requests snap to one of them so
// that the cache holds few variants.
var Sizes = []Size{
	{32, 32, "crop"}, {96, 96, "crop"}, {320, 240, "scale"}, {640, 480, "scale"}, {800, 600, "scale"},
}

// Pick returns the size to generate for a request: the smallest of Sizes with the
// requested method that is at least as large as asked, else the largest of them.
func Pick(width, height int, method string) Size {
	if method != "crop" {
		method = "scale"
	}
	var best, largest *Size
	for i := range Sizes {
		s := &Sizes[i]
		if s.Method != method {
			continue
		}
		largest = s
		if s.Width >= width && s.Height >= height && best == nil {
			best = s
		}
	}
	if best == nil {
		best = largest
	}
	return *best
}

// Generate decodes the image in r (JPEG, PNG, GIF's first frame, WebP) and returns
// the thumbnail's bytes and content type: JPEG for JPEG sources, PNG otherwise so
// transparency survives. An image is never scaled up.
func Generate(r io.ReadSeeker, size Size, maxPixels int64) ([]byte, string, error) {
	cfg, format, err := image.DecodeConfig(r)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrNotImage, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return nil, "", fmt.Errorf("%w: %d × %d", ErrTooLarge, cfg.Width, cfg.Height)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, "", err
	}
	var src image.Image
	if format == "gif" {
		src, err = gif.Decode(r) // the first frame
	} else {
		src, _, err = image.Decode(r)
	}
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrNotImage, err)
	}
	dst := resize(src, size)
	var buf bytes.Buffer
	if format == "jpeg" {
		err = jpeg.Encode(&buf, dst, &jpeg.Options{Quality: 80})
		return buf.Bytes(), "image/jpeg", err
	}
	err = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, dst)
	return buf.Bytes(), "image/png", err
}

// resize scales src to fit within size ("scale", keeping the aspect ratio) or to
// fill it and cut the overflow from the centre ("crop").
func resize(src image.Image, size Size) image.Image {
	b := src.Bounds()
	sw, sh := b.Dx(), b.Dy()
	if size.Method == "crop" {
		// The largest centred region of the target's aspect ratio.
		cw, ch := sw, sw*size.Height/size.Width
		if ch > sh {
			cw, ch = sh*size.Width/size.Height, sh
		}
		x0, y0 := b.Min.X+(sw-cw)/2, b.Min.Y+(sh-ch)/2
		crop := image.Rect(x0, y0, x0+cw, y0+ch)
		w, h := min(size.Width, cw), min(size.Height, ch)
		dst := image.NewRGBA(image.Rect(0, 0, w, h))
		draw.ApproxBiLinear.Scale(dst, dst.Bounds(), src, crop, draw.Src, nil)
		return dst
	}
	w, h := sw, sh
	if w > size.Width {
		w, h = size.Width, max(1, sh*size.Width/sw)
	}
	if h > size.Height {
		w, h = max(1, sw*size.Height/sh), size.Height
	}
	if w == sw && h == sh {
		return src
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.ApproxBiLinear.Scale(dst, dst.Bounds(), src, b, draw.Src, nil)
	return dst
}
