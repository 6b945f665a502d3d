from longlive_jax.cli import main

raise SystemExit(main())
