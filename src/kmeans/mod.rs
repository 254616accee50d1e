//! k-means clustering: what are the anchors of a set of vectors?
