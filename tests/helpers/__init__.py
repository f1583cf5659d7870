"""What several test modules share: the golden-case reader, the capture writer for
`reshaper apply`, the live topology's frames, the cross-carrier inputs, the appliance
run in a namespace. Test modules import these (and conftest fixtures), never each other."""
