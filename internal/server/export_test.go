package server

// FlushRouteDenials ends the window of route-auth refusals now, as its
// ticker would, and writes their summaries to the audit log.
func (s *Server) FlushRouteDenials() { s.routeDenied.flush() }
