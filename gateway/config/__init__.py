"""Config shapes (`model`), cross-resource checks (`checks`) and loading a file (`load`)."""
