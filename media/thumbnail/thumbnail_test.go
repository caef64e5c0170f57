package thumbnail_test

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"testing"

	"github.com/hongyan/hongyan/media/thumbnail"
)

func TestPick(t *testing.T) {
	for _, tc := range []struct {
		w, h   int
		method string
		want   thumbnail.Size
	}{
		{10, 10, "crop", thumbnail.Size{Width: 32, Height: 32, Method: "crop"}},
		{33, 20, "crop", thumbnail.Size{Width: 96, Height: 96, Method: "crop"}},
		{500, 500, "crop", thumbnail.Size{Width: 96, Height: 96, Method: "crop"}},
		{100, 100, "scale", thumbnail.Size{Width: 320, Height: 240, Method: "scale"}},
		{700, 500, "scale", thumbnail.Size{Width: 800, Height: 600, Method: "scale"}},
		{5000, 5000, "", thumbnail.Size{Width: 800, Height: 600, Method: "scale"}},
	} {
		if got := thumbnail.Pick(tc.w, tc.h, tc.method); got != tc.want {
			t.Errorf("Pick(%d, %d, %q) = %v; want %v", tc.w, tc.h, tc.method, got, tc.want)
		}
	}
}

// BenchmarkJPEG12MP measures a thumbnail of a 12-megapixel photo (4000 × 3000
// JPEG), decode included, at the two sizes clients ask for most.
func BenchmarkJPEG12MP(b *testing.B) {
	img := image.NewYCbCr(image.Rect(0, 0, 4000, 3000), image.YCbCrSubsampleRatio420)
	for y := range 3000 {
		for x := range 4000 {
			img.Y[y*img.YStride+x] = uint8(x*y) ^ uint8(x)
		}
	}
	for i := range img.Cb {
		img.Cb[i], img.Cr[i] = uint8(i), uint8(i>>3)
	}
	var src bytes.Buffer
	if err := jpeg.Encode(&src, img, &jpeg.Options{Quality: 90}); err != nil {
		b.Fatal(err)
	}
	for _, size := range []thumbnail.Size{{Width: 96, Height: 96, Method: "crop"}, {Width: 800, Height: 600, Method: "scale"}} {
		b.Run(size.Method, func(b *testing.B) {
			for b.Loop() {
				if _, _, err := thumbnail.Generate(bytes.NewReader(src.Bytes()), size, 40_000_000); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func animatedGIF(t *testing.T, w, h, frames int) []byte {
	t.Helper()
	pal := color.Palette{color.Black, color.White, color.RGBA{255, 0, 0, 255}}
	g := &gif.GIF{}
	for i := range frames {
		img := image.NewPaletted(image.Rect(0, 0, w, h), pal)
		for x := range w {
			img.SetColorIndex(x, (x+i)%h, uint8(1+i%2))
		}
		g.Image, g.Delay = append(g.Image, img), append(g.Delay, 10)
	}
	var buf bytes.Buffer
	if err := gif.EncodeAll(&buf, g); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestAnimatedGIF(t *testing.T) {
	src := animatedGIF(t, 200, 150, 3)
	data, typ, err := thumbnail.GenerateAnimated(bytes.NewReader(src), thumbnail.Size{Width: 96, Height: 96, Method: "crop"}, 1_000_000)
	if err != nil || typ != "image/gif" {
		t.Fatalf("GenerateAnimated = %s, %v", typ, err)
	}
	g, err := gif.DecodeAll(bytes.NewReader(data))
	if err != nil || len(g.Image) != 3 || g.Image[0].Bounds().Dx() != 96 || g.Image[0].Bounds().Dy() != 96 {
		t.Fatalf("animated thumbnail: %v; want 3 frames of 96 × 96", err)
	}
	// The pixel bound counts every frame: three frames of 30 000 px exceed 80 000.
	if _, _, err := thumbnail.GenerateAnimated(bytes.NewReader(src), thumbnail.Size{Width: 96, Height: 96, Method: "crop"}, 80_000); !errors.Is(err, thumbnail.ErrTooLarge) {
		t.Errorf("3 × 30 000 px with a bound of 80 000: %v; want ErrTooLarge", err)
	}
	// A still image asked for animated gets a still thumbnail.
	still := animatedGIF(t, 200, 150, 1)
	if _, typ, err := thumbnail.GenerateAnimated(bytes.NewReader(still), thumbnail.Size{Width: 96, Height: 96, Method: "crop"}, 1_000_000); err != nil || typ != "image/png" {
		t.Errorf("one-frame GIF: %s, %v; want a still PNG", typ, err)
	}
	// A truncated animation is refused cleanly.
	if _, _, err := thumbnail.GenerateAnimated(bytes.NewReader(src[:len(src)/2]), thumbnail.Size{Width: 96, Height: 96, Method: "crop"}, 1_000_000); err == nil {
		t.Errorf("truncated GIF gave no error")
	}
}
