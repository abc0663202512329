"""echoscreen: Rheumatic Heart Disease screening from echocardiograms."""

__version__ = "0.1.0"
