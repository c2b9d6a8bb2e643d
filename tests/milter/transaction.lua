-- transaction.lua: one SMTP transaction through tn-quota-milter.
-- miltertest -D socket=inet:PORT@127.0.0.1 -D rcpts=a@x,b@y
--            [-D size=N] [-D body=N] [-D qid=ID] [-D finish=eom|abort|none]
--            [-D inhdr=N -D hdrname=NAME] [-D sep=C] -s transaction.lua
-- Prints "rcpt ADDRESS continue|replycode|tempfail|reject|accept" per
-- recipient and "eom continue|replycode|..." (with finish=eom, after
-- `body` bytes of body). An SMFIR_ACCEPT at RCPT is an error: it would
-- stop the checks of the remaining recipients.
local names = {}
names[SMFIR_CONTINUE] = "continue"
names[SMFIR_REPLYCODE] = "replycode"
names[SMFIR_TEMPFAIL] = "tempfail"
names[SMFIR_REJECT] = "reject"
names[SMFIR_ACCEPT] = "accept"
names[SMFIR_DISCARD] = "discard"
local function name(r) return names[r] or ("other:" .. tostring(r)) end

mt.set_timeout(30)
conn = mt.connect(socket, 20, 0.1)
if conn == nil then error("cannot connect to " .. socket) end
finish = finish or "eom"
qid = qid or "4QTEST0001"

mt.macro(conn, SMFIC_MAIL, "i", qid)
local err
if size ~= nil then
  err = mt.mailfrom(conn, "<sender@external.example>", "SIZE=" .. size)
else
  err = mt.mailfrom(conn, "<sender@external.example>")
end
if err ~= nil then error("mailfrom: " .. err) end

local accepted = 0
-- sep: the recipients' separator (default ","; a tab for addresses
-- holding commas)
for r in string.gmatch(rcpts, "[^" .. (sep or ",") .. "]+") do
  mt.macro(conn, SMFIC_RCPT, "i", qid)
  err = mt.rcptto(conn, "<" .. r .. ">")
  if err ~= nil then error("rcptto " .. r .. ": " .. err) end
  local reply = mt.getreply(conn)
  mt.echo("rcpt " .. r .. " " .. name(reply))
  if reply == SMFIR_ACCEPT then error("SMFIR_ACCEPT at RCPT for " .. r) end
  if reply == SMFIR_CONTINUE then accepted = accepted + 1 end
end

if finish == "abort" then
  err = mt.abort(conn)
  if err ~= nil then error("abort: " .. err) end
  mt.echo("aborted")
elseif finish == "eom" and accepted > 0 then
  err = mt.header(conn, "Subject", "tn-quota-milter test")
  if err ~= nil then error("header: " .. err) end
  -- incoming copies of the tenant header (a sender's forgery)
  for i = 1, tonumber(inhdr or "0") do
    err = mt.header(conn, hdrname, "forged-" .. i)
    if err ~= nil then error("header: " .. err) end
  end
  -- no mt.eoh(): the milter asked Postfix not to send end-of-header
  local n = tonumber(body or "100")
  local line = string.rep("x", 78) .. "\r\n"
  local chunk = string.rep(line, 800)
  while n > 0 do
    local piece = chunk
    if n < #chunk then piece = string.sub(chunk, 1, n) end
    err = mt.bodystring(conn, piece)
    if err ~= nil then error("body: " .. err) end
    n = n - #piece
  end
  err = mt.eom(conn)
  if err ~= nil then error("eom: " .. err) end
  mt.echo("eom " .. name(mt.getreply(conn)))
  if hdrname ~= nil then
    local v = mt.getheader(conn, hdrname, 0)
    mt.echo("hdradd " .. (v or "(none)"))
    mt.echo("hdrdelete " .. (mt.eom_check(conn, MT_HDRDELETE, hdrname) and "yes" or "no"))
  end
end
mt.disconnect(conn)
mt.echo("done")
