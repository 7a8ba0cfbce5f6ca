"""Generated from the .proto files beside this one by the build; never edited."""
