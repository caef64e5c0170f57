-- The unread counts are aggregates over a user's notifications in a room after a
-- read position; with the thread and highlight in the index they are counted from
-- the index alone, without reading a row per notification.
DROP INDEX push_notifications_counts;
CREATE INDEX push_notifications_counts ON push_notifications (user_id, room_id, event_pos, thread_id, highlight);
