DROP TRIGGER book_changes_notify ON book;
DROP TRIGGER book_updated ON book;
DROP TRIGGER book_created_or_deleted ON book;
DROP FUNCTION sequence_book_changes();
DROP FUNCTION notify_book_changes();
DROP FUNCTION record_book_change();
DROP TABLE book_change_counter;
DROP TABLE book_change;
