package cas

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// s3Backend is a remote in an S3 bucket, under a prefix, through the AWS SDK: the
// endpoint, region and credentials come from the environment and ~/.aws as the
// SDK reads them. An endpoint that is not AWS's (AWS_ENDPOINT_URL) is addressed
// path-style. Content is verified by BLAKE3 on the way in, so the SDK computes no
// checksums of its own beyond what a request requires.
type s3Backend struct {
	client *s3.Client
	bucket string
	prefix string // "" or ending in "/"
}

func newS3Backend(ctx context.Context, u *url.URL) (*s3Backend, error) {
	if u.Host == "" {
		return nil, errors.New("want s3://bucket/prefix")
	}
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, err
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	custom := os.Getenv("AWS_ENDPOINT_URL") != "" || os.Getenv("AWS_ENDPOINT_URL_S3") != ""
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = custom
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	prefix := strings.Trim(u.Path, "/")
	if prefix != "" {
		prefix += "/"
	}
	return &s3Backend{client: client, bucket: u.Host, prefix: prefix}, nil
}

func (b *s3Backend) key(k string) *string { return aws.String(b.prefix + k) }

// status returns the HTTP status of an SDK error, or 0.
func status(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func notFound(err error) bool {
	var nk *types.NoSuchKey
	var nf *types.NotFound
	return errors.As(err, &nk) || errors.As(err, &nf) || status(err) == http.StatusNotFound
}

func (b *s3Backend) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.bucket, Key: b.key(key)})
	if notFound(err) {
		return nil, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return out.Body, nil
}

func (b *s3Backend) Has(ctx context.Context, key string) (bool, error) {
	_, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.bucket, Key: b.key(key)})
	if notFound(err) {
		return false, nil
	}
	return err == nil, err
}

func (b *s3Backend) Put(ctx context.Context, key string, r io.ReadSeeker, size int64, create bool) error {
	in := &s3.PutObjectInput{Bucket: &b.bucket, Key: b.key(key), Body: r, ContentLength: aws.Int64(size)}
	if create {
		in.IfNoneMatch = aws.String("*")
	}
	_, err := b.client.PutObject(ctx, in)
	if create && err != nil {
		var ae smithy.APIError
		switch {
		case status(err) == http.StatusPreconditionFailed:
			return nil // there already
		case errors.As(err, &ae) && ae.ErrorCode() == "NotImplemented":
			// A server without conditional writes: the callers asked with HEAD.
			if _, err := r.Seek(0, io.SeekStart); err != nil {
				return err
			}
			in.IfNoneMatch = nil
			_, err = b.client.PutObject(ctx, in)
		}
	}
	return err
}

func (b *s3Backend) List(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: &b.bucket, Prefix: b.key(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, o := range page.Contents {
			keys = append(keys, strings.TrimPrefix(aws.ToString(o.Key), b.prefix))
		}
	}
	return keys, nil
}
