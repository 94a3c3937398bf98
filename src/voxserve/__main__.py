from voxserve.cli import main

main()
