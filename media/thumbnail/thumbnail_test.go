package thumbnail_test

import (
	"bytes"
	"image"
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
