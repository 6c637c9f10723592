from peftlab.sweep.child import leave
from peftlab.cli import main

leave(main())
