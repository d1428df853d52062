from download_edge.main import main

main()
