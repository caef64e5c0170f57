-- Outliers are events the server holds without having them in a room's timeline: the
-- state and auth chain a remote join brings, and auth events fetched over federation.
-- They live in events like any other (so state lookups need no second table) under
-- negative stream positions and room_seq values taken from this stream, which every
-- timeline query (positions and seqs above zero) leaves out.
INSERT INTO streams (name, pos) VALUES ('outliers', 0);
