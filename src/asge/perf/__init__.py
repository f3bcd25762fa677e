"""Performance measurement: ``asge bench`` (speed and activation memory against backprop), host overhead,
saved-activation metering."""
