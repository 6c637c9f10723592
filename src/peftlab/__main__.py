from peftlab.cli import main
from peftlab.sweep.child import leave

leave(main())
