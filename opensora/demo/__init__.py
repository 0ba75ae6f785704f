"""The demo world: procedurally rendered, captioned clips of coloured shapes, and their analysis."""
