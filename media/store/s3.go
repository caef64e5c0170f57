package store

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 is a Backend on an S3 bucket (MinIO, AWS S3, and compatible stores), objects
// at prefix + key.
type S3 struct {
	client *minio.Client
	bucket string
	prefix string
}

// S3Config names the bucket and how to reach it.
type S3Config struct {
	Endpoint, Bucket, Prefix, AccessKey, SecretKey string
	Secure                                         bool
}

// NewS3 connects to the bucket, creating it if it does not exist.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: cfg.Secure,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 %s: %w", cfg.Endpoint, err)
	}
	exists, err := client.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("s3 bucket %s: %w", cfg.Bucket, err)
	}
	if !exists {
		if err := client.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{}); err != nil {
			return nil, fmt.Errorf("create s3 bucket %s: %w", cfg.Bucket, err)
		}
	}
	return &S3{client: client, bucket: cfg.Bucket, prefix: cfg.Prefix}, nil
}

// Put uploads the object, streaming: minio-go sends large objects as a multipart
// upload in parts of bounded size.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if ok, err := s.Has(ctx, key); err != nil || ok {
		return err
	}
	_, err := s.client.PutObject(ctx, s.bucket, s.prefix+key, r, size, minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		// One part in flight, of bounded size, keeps an upload's buffer small
		// whatever the file's size (minio-go buffers each part in flight).
		PartSize:   16 << 20,
		NumThreads: 1,
	})
	if err != nil {
		return fmt.Errorf("s3 put %s: %w", key, err)
	}
	return nil
}

// Open returns the object; minio-go's object reader seeks with ranged GETs.
func (s *S3) Open(ctx context.Context, key string) (Object, int64, error) {
	obj, err := s.client.GetObject(ctx, s.bucket, s.prefix+key, minio.GetObjectOptions{})
	if err != nil {
		return nil, 0, fmt.Errorf("s3 get %s: %w", key, err)
	}
	st, err := obj.Stat()
	if err != nil {
		obj.Close()
		if minio.ToErrorResponse(err).StatusCode == http.StatusNotFound {
			return nil, 0, ErrNotFound
		}
		return nil, 0, fmt.Errorf("s3 stat %s: %w", key, err)
	}
	return obj, st.Size, nil
}

// Has reports whether the object exists.
func (s *S3) Has(ctx context.Context, key string) (bool, error) {
	_, err := s.client.StatObject(ctx, s.bucket, s.prefix+key, minio.StatObjectOptions{})
	if err == nil {
		return true, nil
	}
	if minio.ToErrorResponse(err).StatusCode == http.StatusNotFound {
		return false, nil
	}
	return false, fmt.Errorf("s3 stat %s: %w", key, err)
}

// Delete removes the object.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := s.client.RemoveObject(ctx, s.bucket, s.prefix+key, minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("s3 delete %s: %w", key, err)
	}
	return nil
}
