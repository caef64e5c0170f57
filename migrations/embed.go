// Package migrations holds Hongyan's SQL schema as numbered migrations, one folder per
// dialect: postgres/NNNN_name.sql and sqlite/NNNN_name.sql with the same numbers.
// The schema is documented here, in the migrations, and nowhere else.
//
// Numbers are reserved in ranges per domain so that work on different domains never
// collides: 0001–0099 accounts and the core, 0100–0199 rooms, 0200–0299 sync streams,
// 0300–0399 end-to-end encryption, 0400–0499 media, 0500–0599 federation,
// 0600–0699 push, 0700–0799 social and calls, 0800–0899 application services.
// The runner applies every version not yet recorded, in numeric order, so a lower
// number that lands after a higher one is still applied.
package migrations

import "embed"

// FS holds both dialects' migration files.
//
//go:embed postgres/*.sql sqlite/*.sql
var FS embed.FS
