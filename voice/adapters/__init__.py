"""The outside world behind small interfaces: Twilio REST, the action runner, flow files, recordings, speech."""
