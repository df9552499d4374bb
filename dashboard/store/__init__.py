"""What SQLite keeps: history recorded from the files, events, storyboard projects, migrations."""
