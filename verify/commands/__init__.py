"""What each command does, given typed options (the command line only parses them): run models, judge, publish."""
