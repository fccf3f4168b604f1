"""Reading run folders back: metrics curves, summaries and the plots drawn from them."""
