"""FG-CLIP core library."""
