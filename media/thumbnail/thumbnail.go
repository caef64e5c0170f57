// Package thumbnail scales and crops images for media thumbnails. It refuses images
// whose declared size exceeds a pixel bound before decoding them, so a small file
// that claims 50 000 × 50 000 pixels (a decompression bomb) costs nothing.
package thumbnail

import (
	"bufio"
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

// GenerateAnimated thumbnails every frame of an animated GIF and returns an
// animated GIF, when r holds one with more than one frame; otherwise it returns
// Generate's still thumbnail. The pixel bound covers all frames together.
func GenerateAnimated(r io.ReadSeeker, size Size, maxPixels int64) ([]byte, string, error) {
	cfg, format, err := image.DecodeConfig(r)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrNotImage, err)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, "", err
	}
	if format != "gif" {
		return Generate(r, size, maxPixels)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return nil, "", fmt.Errorf("%w: %d × %d", ErrTooLarge, cfg.Width, cfg.Height)
	}
	// Count frames before decoding them all: each costs width × height.
	frames, err := countGIFFrames(r)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrNotImage, err)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, "", err
	}
	if frames < 2 {
		return Generate(r, size, maxPixels)
	}
	if int64(frames)*int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return nil, "", fmt.Errorf("%w: %d frames of %d × %d", ErrTooLarge, frames, cfg.Width, cfg.Height)
	}
	g, err := gif.DecodeAll(r)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrNotImage, err)
	}
	// Frames may cover part of the canvas and build on the one before: compose
	// each onto a full canvas, then scale that.
	canvas := image.NewRGBA(image.Rect(0, 0, g.Config.Width, g.Config.Height))
	out := &gif.GIF{LoopCount: g.LoopCount}
	for i, frame := range g.Image {
		draw.Draw(canvas, frame.Bounds(), frame, frame.Bounds().Min, draw.Over)
		scaled := resize(canvas, size)
		b := scaled.Bounds()
		pal := image.NewPaletted(b, frame.Palette)
		draw.FloydSteinberg.Draw(pal, b, scaled, b.Min)
		out.Image = append(out.Image, pal)
		out.Delay = append(out.Delay, g.Delay[i])
		if i < len(g.Disposal) {
			out.Disposal = append(out.Disposal, gif.DisposalNone)
		}
		if i < len(g.Disposal) && g.Disposal[i] == gif.DisposalBackground {
			draw.Draw(canvas, frame.Bounds(), image.Transparent, image.Point{}, draw.Src)
		}
	}
	var buf bytes.Buffer
	if err := gif.EncodeAll(&buf, out); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), "image/gif", nil
}

// countGIFFrames counts a GIF's image descriptors by walking its blocks, without
// decompressing any pixels.
func countGIFFrames(r io.Reader) (int, error) {
	br := bufio.NewReader(r)
	var hdr [13]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return 0, err
	}
	if hdr[10]&0x80 != 0 { // global colour table
		if _, err := br.Discard(3 << (hdr[10]&7 + 1)); err != nil {
			return 0, err
		}
	}
	skipSubBlocks := func() error {
		for {
			n, err := br.ReadByte()
			if err != nil {
				return err
			}
			if n == 0 {
				return nil
			}
			if _, err := br.Discard(int(n)); err != nil {
				return err
			}
		}
	}
	frames := 0
	for {
		b, err := br.ReadByte()
		if err != nil {
			return frames, nil // a truncated file: what was counted
		}
		switch b {
		case 0x21: // extension: label, then sub-blocks
			if _, err := br.ReadByte(); err != nil {
				return frames, nil
			}
			if skipSubBlocks() != nil {
				return frames, nil
			}
		case 0x2c: // image descriptor
			var d [9]byte
			if _, err := io.ReadFull(br, d[:]); err != nil {
				return frames, nil
			}
			frames++
			if d[8]&0x80 != 0 { // local colour table
				if _, err := br.Discard(3 << (d[8]&7 + 1)); err != nil {
					return frames, nil
				}
			}
			if _, err := br.ReadByte(); err != nil { // LZW minimum code size
				return frames, nil
			}
			if skipSubBlocks() != nil {
				return frames, nil
			}
		case 0x3b: // trailer
			return frames, nil
		default:
			return frames, fmt.Errorf("bad GIF block 0x%02x", b)
		}
	}
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
