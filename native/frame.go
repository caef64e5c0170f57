// Package native is Hongyan's native protocol: length-prefixed frames carrying
// envelopes in JSON, MessagePack or CBOR over TCP, TLS or WebSocket, for SDK clients
// and bots that want one persistent connection with ordered, acknowledged pushes
// instead of HTTP long-polling. docs/native-protocol.md is its specification.
//
// The package is a front-end: a session decodes ops and calls the same core services
// (homeserver/rooms, users, typing, receipts, presence, media) as the Matrix API.
package native

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// Codec identifies a frame body's encoding.
type Codec byte

// The codecs a frame may carry.
const (
	JSON    Codec = 0
	MsgPack Codec = 1
	CBOR    Codec = 2
)

func (c Codec) String() string {
	switch c {
	case JSON:
		return "json"
	case MsgPack:
		return "msgpack"
	case CBOR:
		return "cbor"
	}
	return fmt.Sprintf("codec(%d)", byte(c))
}

// ParseCodec returns the codec named name (json, msgpack, cbor).
func ParseCodec(name string) (Codec, error) {
	for _, c := range []Codec{JSON, MsgPack, CBOR} {
		if c.String() == name {
			return c, nil
		}
	}
	return 0, fmt.Errorf("unknown codec %q (want json, msgpack or cbor)", name)
}

// HeaderSize is a frame header's length: codec byte and 24-bit body length.
const HeaderSize = 4

// MaxFrame is the largest body a 24-bit length can describe (16 MiB - 1).
const MaxFrame = 1<<24 - 1

// Framing errors. A connection that produces one is closed, since the reader can no
// longer find the next frame's start.
var (
	ErrFrameTooLarge = errors.New("frame larger than the limit")
	ErrBadCodec      = errors.New("unknown codec byte")
)

// ReadFrame reads one frame. Bodies longer than limit are refused before they are
// read, so a hostile length cannot make the reader allocate 16 MiB.
func ReadFrame(r *bufio.Reader, limit int) (Codec, []byte, error) {
	var h [HeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	c := Codec(h[0])
	if c > CBOR {
		return c, nil, fmt.Errorf("%w %d", ErrBadCodec, h[0])
	}
	n := int(h[1])<<16 | int(h[2])<<8 | int(h[3])
	if n > limit {
		return c, nil, fmt.Errorf("%w: %d > %d bytes", ErrFrameTooLarge, n, limit)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return c, nil, err
	}
	return c, body, nil
}

// AppendFrame appends body as a frame of codec c to dst.
func AppendFrame(dst []byte, c Codec, body []byte) ([]byte, error) {
	if len(body) > MaxFrame {
		return dst, ErrFrameTooLarge
	}
	n := len(body)
	dst = append(dst, byte(c), byte(n>>16), byte(n>>8), byte(n))
	return append(dst, body...), nil
}
