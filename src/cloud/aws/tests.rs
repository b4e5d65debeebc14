//! Mock-based tests (aws-smithy-mocks) of the paths the local server cannot show.
